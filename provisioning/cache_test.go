package provisioning

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// Every input of the rendering is part of the cache key, so a change to any
// of them renders afresh, and a hit is byte-identical to a fresh render.
func TestRenderCacheKey(t *testing.T) {
	base := func() macData {
		return macData{Model: "T54W", MAC: "805ec0aabbcc", URL: "https://p/k/", Username: "prov-x", Password: "pw",
			RepeatMinutes: 60, NTPServer: "ntp", TimeZone: "+1",
			Accounts: []accountData{{N: 1, Active: true, Label: "Ada", DisplayName: "1002", AuthName: "1002", UserName: "1002",
				Password: "sip", Server: "example.test", Proxy: "", Port: 5060, Transport: 0, Expires: 3600}, {N: 2}},
			Overrides: []keyValue{{"a.b", "1"}}}
	}
	mutations := map[string]func(*macData){
		"model": func(d *macData) { d.Model = "T46U" }, "mac": func(d *macData) { d.MAC = "805ec0aabbcd" },
		"url": func(d *macData) { d.URL += "x" }, "username": func(d *macData) { d.Username += "x" },
		"password": func(d *macData) { d.Password += "x" }, "repeat": func(d *macData) { d.RepeatMinutes++ },
		"ntp": func(d *macData) { d.NTPServer += "x" }, "tz": func(d *macData) { d.TimeZone = "+2" },
		"active": func(d *macData) { d.Accounts[0].Active = false }, "label": func(d *macData) { d.Accounts[0].Label = "Grace" },
		"display": func(d *macData) { d.Accounts[0].DisplayName = "1003" }, "auth": func(d *macData) { d.Accounts[0].AuthName = "1003" },
		"user": func(d *macData) { d.Accounts[0].UserName = "1003" }, "sip password": func(d *macData) { d.Accounts[0].Password = "new" },
		"server": func(d *macData) { d.Accounts[0].Server = "other.test" }, "proxy": func(d *macData) { d.Accounts[0].Proxy = "p" },
		"port": func(d *macData) { d.Accounts[0].Port = 5061 }, "transport": func(d *macData) { d.Accounts[0].Transport = 1 },
		"expires": func(d *macData) { d.Accounts[0].Expires = 600 }, "slot": func(d *macData) { d.Accounts[1].N = 3 },
		"accounts": func(d *macData) { d.Accounts = d.Accounts[:1] }, "override key": func(d *macData) { d.Overrides[0].Key = "a.c" },
		"override value": func(d *macData) { d.Overrides[0].Value = "2" }, "overrides": func(d *macData) { d.Overrides = nil },
		// A value cannot imitate a field boundary.
		"boundary": func(d *macData) { d.Username, d.Password = "prov-x2:pw", "" },
	}
	b := base()
	k := b.key()
	for name, mutate := range mutations {
		d := base()
		mutate(&d)
		if d.key() == k {
			t.Errorf("%s: key unchanged", name)
		}
	}
	var c renderCache
	first, sum, err := c.render(&b)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _ := b.render()
	hit, hitSum, _ := c.render(&b)
	if !bytes.Equal(first, fresh) || !bytes.Equal(hit, fresh) {
		t.Fatal("cached body differs from a fresh render")
	}
	if sum != sha256.Sum256(fresh) || hitSum != sum {
		t.Fatal("cached SHA-256 is not the body's")
	}
	d := base()
	d.Accounts[0].Password = "rotated"
	changed, _, _ := c.render(&d)
	if bytes.Equal(changed, first) || !bytes.Contains(changed, []byte("rotated")) {
		t.Fatal("a changed input was served from the cache")
	}
}
