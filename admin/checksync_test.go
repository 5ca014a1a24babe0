package admin

import (
	"slices"
	"testing"
)

// Disabling, enabling, signing out and deleting a user each ask their phones
// (devices with a line for them) to fetch their configuration again.
func TestUserChangesSendCheckSync(t *testing.T) {
	e := newEnv(t)
	u := e.createUser("1002", "Ada Lovelace")
	other := e.createUser("1003", "Grace Hopper")
	e.call("POST", base+"/devices", providerSecret, map[string]any{"mac": "805ec0aabbcc", "model": "T54W",
		"lines": []map[string]any{{"line": 1, "user_id": u.ID}, {"line": 2, "user_id": other.ID}}}, 201, nil)
	e.call("POST", base+"/devices", providerSecret, map[string]any{"mac": "805ec0000001", "model": "T31G",
		"lines": []map[string]any{{"line": 1, "user_id": other.ID}}}, 201, nil)

	want := []string{"default/805ec0aabbcc"}
	step := func(name, method, path string, status int) {
		t.Helper()
		before := len(e.notifier.Calls())
		e.call(method, path, providerSecret, nil, status, nil)
		got := e.notifier.Calls()[before:]
		if !slices.Equal(got, want) {
			t.Errorf("%s: check-syncs = %v, want %v (only the user's phone)", name, got, want)
		}
	}
	step("disable", "POST", base+"/users/"+u.ID+"/disable", 200)
	step("enable", "POST", base+"/users/"+u.ID+"/enable", 200)
	step("sign-out", "DELETE", base+"/users/"+u.ID+"/registrations", 200)
	e.call("POST", base+"/users/"+u.ID+"/disable", providerSecret, nil, 200, nil)
	step("delete", "DELETE", base+"/users/"+u.ID, 204)
}
