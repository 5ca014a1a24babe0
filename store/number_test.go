package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/dialtone-voip/dialtone/store"
)

func TestNormalizeE164(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"+442079460000", "+442079460000", true},
		{"442079460000", "+442079460000", true},
		{" +12025550123 ", "+12025550123", true},
		{"+12345678", "+12345678", true},
		{"+123456789012345", "+123456789012345", true},
		{"+1234567", "", false},          // 7 digits
		{"+1234567890123456", "", false}, // 16 digits
		{"+0442079460000", "", false},    // no country code starts with 0
		{"+44 20 7946 0000", "", false},
		{"++442079460000", "", false},
		{"+44207946000a", "", false},
		{"", "", false},
	} {
		got, ok := store.NormalizeE164(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("NormalizeE164(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNumber(t *testing.T) {
	a := newAcme(t)
	ada, bob := a.user("1002", "Ada Lovelace"), a.user("1003", "Bob Byte")
	adaLine := a.callflow("Ada direct", ring(ada.ID))
	bobLine := a.callflow("Bob direct", ring(bob.ID))

	t.Run("AddIsAvailable", func(t *testing.T) {
		n, err := a.db.AddNumber(a.id, "442079460000", ops) // without the +
		a.ok(err)
		if n.E164 != "+442079460000" || n.Status != store.NumberAvailable || n.CallflowID != "" {
			t.Fatalf("added = %+v", n)
		}
		if _, err := a.db.AddNumber(a.id, "+442079460000", ops); !errors.Is(err, store.ErrExists) {
			t.Fatalf("second add = %v, want ErrExists", err)
		}
		if _, err := a.db.CreateAccount("other", "other.test", ops); err != nil {
			t.Fatal(err)
		}
		if _, err := a.db.AddNumber("other", "+442079460000", ops); !errors.Is(err, store.ErrExists) {
			t.Fatalf("add to another account = %v, want ErrExists", err)
		}
		_, err = a.db.AddNumber(a.id, "12345", ops)
		wantInvalid(t, err, "e164")
	})

	t.Run("ActivateDeactivateHistory", func(t *testing.T) {
		t0 := a.clock.Now()
		n, err := a.db.ActivateNumber(a.id, "442079460000", adaLine.ID, ops)
		a.ok(err)
		if n.Status != store.NumberActive || n.CallflowID != adaLine.ID {
			t.Fatalf("activated = %+v", n)
		}
		cf, err := a.db.Callflow(a.id, adaLine.ID)
		a.ok(err)
		if cf.Status != store.CallflowActive || len(cf.Numbers) != 1 || cf.Numbers[0] != "+442079460000" {
			t.Fatalf("callflow after activate = %s %v", cf.Status, cf.Numbers)
		}
		_, err = a.db.ActivateNumber(a.id, "+442079460000", bobLine.ID, ops)
		wantRule(t, err, "number_active")
		_, err = a.db.ActivateNumber(a.id, "+442079460000", "cf-nothing", ops)
		wantInvalid(t, err, "callflow_id")

		a.clock.Advance(time.Hour)
		_, _, err = a.db.ReassignCallflow(a.id, adaLine.ID, bobLine.ID, ops)
		a.ok(err)
		a.clock.Advance(time.Hour)
		n, err = a.db.DeactivateNumber(a.id, "+442079460000", ops)
		a.ok(err)
		if n.Status != store.NumberAvailable || n.CallflowID != "" {
			t.Fatalf("deactivated = %+v", n)
		}
		if len(n.History) != 2 {
			t.Fatalf("history = %+v, want 2 periods", n.History)
		}
		h0, h1 := n.History[0], n.History[1]
		if h0.CallflowID != adaLine.ID || h0.CallflowName != "Ada direct" || !h0.From.Equal(t0) || h0.To == nil || !h0.To.Equal(t0.Add(time.Hour)) || h0.Actor != "ops" {
			t.Errorf("period 0 = %+v", h0)
		}
		if h1.CallflowID != bobLine.ID || !h1.From.Equal(t0.Add(time.Hour)) || h1.To == nil || !h1.To.Equal(t0.Add(2*time.Hour)) {
			t.Errorf("period 1 = %+v", h1)
		}
		// Deactivating never deletes (docs/account-model.md rule 10), and twice is a no-op.
		if _, err := a.db.DeactivateNumber(a.id, "+442079460000", ops); err != nil {
			t.Fatal(err)
		}
		if _, err := a.db.Number(a.id, "442079460000"); err != nil {
			t.Fatalf("Number after deactivate = %v", err)
		}
	})

	t.Run("ListByStatus", func(t *testing.T) {
		a.number("+442079460001", bobLine.ID)
		a.number("+442079460002", "")
		for status, want := range map[string][]string{
			"":          {"+442079460000", "+442079460001", "+442079460002"},
			"available": {"+442079460000", "+442079460002"},
			"ACTIVE":    {"+442079460001"},
		} {
			ns, err := a.db.Numbers(a.id, status)
			a.ok(err)
			var got []string
			for _, n := range ns {
				got = append(got, n.E164)
			}
			if len(got) != len(want) {
				t.Fatalf("Numbers(%q) = %v, want %v", status, got, want)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("Numbers(%q) = %v, want %v", status, got, want)
				}
			}
		}
		_, err := a.db.Numbers(a.id, "gone")
		wantInvalid(t, err, "status")
	})

	t.Run("RemoveOnlyAvailable", func(t *testing.T) {
		wantRule(t, a.db.RemoveNumber(a.id, "+442079460001", ops), "number_active")
		a.ok(a.db.RemoveNumber(a.id, "442079460002", ops))
		if _, err := a.db.Number(a.id, "+442079460002"); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Number after remove = %v", err)
		}
		// The number is free again for any account.
		if _, err := a.db.AddNumber("other", "+442079460002", ops); err != nil {
			t.Fatalf("re-add elsewhere = %v", err)
		}
	})
}

func FuzzNormalizeE164(f *testing.F) {
	for _, s := range []string{"+442079460000", "442079460000", "+1", "", "+0123456789", " +12025550123", "+４４2079460000", "+44\x00207946000"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, ok := store.NormalizeE164(s)
		if !ok {
			if got != "" {
				t.Fatalf("NormalizeE164(%q) = %q with ok false", s, got)
			}
			return
		}
		if len(got) < 9 || len(got) > 16 || got[0] != '+' || got[1] == '0' {
			t.Fatalf("NormalizeE164(%q) = %q", s, got)
		}
		for _, c := range got[1:] {
			if c < '0' || c > '9' {
				t.Fatalf("NormalizeE164(%q) = %q: not digits", s, got)
			}
		}
		if again, ok := store.NormalizeE164(got); !ok || again != got {
			t.Fatalf("not idempotent: %q → %q → %q", s, got, again)
		}
	})
}
