package store

import (
	"sort"
	"strings"
)

// Model is a Yealink model dialtone can provision: the common file it asks
// for and how many SIP accounts (lines) it holds. Devices are validated
// against this table when they are written, so a line beyond the model's
// limit is refused at assignment time rather than silently dropped later.
type Model struct {
	Name     string // canonical name as the User-Agent spells it, without "SIP-": "T54W"
	Code     string // common-file code, 3 digits: the phone fetches y000000000<Code>.cfg
	Accounts int    // SIP accounts the model supports (account.1 … account.Accounts)
	DECT     bool   // a DECT base (W-series)
}

// CommonFile is the model's common configuration file name, e.g. "y000000000096.cfg".
func (m Model) CommonFile() string { return "y000000000" + m.Code + ".cfg" }

// models is the one per-model table. Common-file codes are Yealink's (the
// auto-provisioning guide's y0000000000XX.cfg table). The comment at the end
// of each row says where the account count comes from:
//
//	wazo       wazo-provd's Yealink plugin (_NB_SIP_ACCOUNTS, v87)
//	wazo v70   the same, an older plugin that still lists the model
//	datasheet  Yealink's datasheet for the model; verify on a real handset
//
// "code unverified" marks a common-file code no guide or plugin confirmed.
var models = []Model{
	{Name: "T19P_E2", Code: "053", Accounts: 1},             // datasheet
	{Name: "T21P_E2", Code: "052", Accounts: 2},             // datasheet
	{Name: "T23P", Code: "044", Accounts: 3},                // datasheet
	{Name: "T23G", Code: "044", Accounts: 3},                // datasheet
	{Name: "T27P", Code: "045", Accounts: 6},                // datasheet
	{Name: "T27G", Code: "069", Accounts: 6},                // datasheet
	{Name: "T28P", Code: "000", Accounts: 6},                // datasheet; legacy common file
	{Name: "T29G", Code: "046", Accounts: 16},               // datasheet
	{Name: "T30", Code: "127", Accounts: 1},                 // wazo
	{Name: "T30P", Code: "127", Accounts: 1},                // wazo
	{Name: "T31", Code: "123", Accounts: 2},                 // wazo
	{Name: "T31P", Code: "123", Accounts: 2},                // wazo
	{Name: "T31G", Code: "123", Accounts: 2},                // wazo
	{Name: "T31W", Code: "172", Accounts: 2},                // wazo (T31 family)
	{Name: "T33P", Code: "124", Accounts: 4},                // wazo
	{Name: "T33G", Code: "124", Accounts: 4},                // wazo
	{Name: "T34W", Code: "171", Accounts: 4},                // wazo
	{Name: "T38G", Code: "038", Accounts: 6},                // wazo v70
	{Name: "T40P", Code: "054", Accounts: 3},                // datasheet
	{Name: "T40G", Code: "076", Accounts: 3},                // datasheet
	{Name: "T41P", Code: "036", Accounts: 6},                // datasheet
	{Name: "T41S", Code: "068", Accounts: 6},                // wazo
	{Name: "T42G", Code: "029", Accounts: 12},               // datasheet
	{Name: "T42S", Code: "067", Accounts: 12},               // wazo
	{Name: "T42U", Code: "116", Accounts: 12},               // wazo
	{Name: "T43U", Code: "107", Accounts: 12},               // wazo
	{Name: "T44U", Code: "174", Accounts: 12},               // wazo; code unverified
	{Name: "T44W", Code: "174", Accounts: 12},               // wazo
	{Name: "T46G", Code: "028", Accounts: 16},               // wazo
	{Name: "T46S", Code: "066", Accounts: 16},               // wazo
	{Name: "T46U", Code: "108", Accounts: 16},               // wazo
	{Name: "T48G", Code: "035", Accounts: 16},               // wazo
	{Name: "T48S", Code: "065", Accounts: 16},               // wazo
	{Name: "T48U", Code: "109", Accounts: 16},               // wazo
	{Name: "T49G", Code: "051", Accounts: 16},               // datasheet
	{Name: "T52S", Code: "074", Accounts: 12},               // datasheet
	{Name: "T53", Code: "095", Accounts: 12},                // wazo
	{Name: "T53W", Code: "095", Accounts: 12},               // wazo
	{Name: "T54S", Code: "070", Accounts: 16},               // wazo
	{Name: "T54W", Code: "096", Accounts: 16},               // wazo
	{Name: "T56A", Code: "058", Accounts: 16},               // datasheet
	{Name: "T57W", Code: "097", Accounts: 16},               // wazo
	{Name: "T58A", Code: "058", Accounts: 16},               // wazo
	{Name: "T58V", Code: "058", Accounts: 16},               // wazo
	{Name: "T58W", Code: "150", Accounts: 16},               // wazo
	{Name: "VP59", Code: "091", Accounts: 16},               // datasheet
	{Name: "T73U", Code: "186", Accounts: 12},               // wazo
	{Name: "T73W", Code: "183", Accounts: 12},               // wazo
	{Name: "T74U", Code: "187", Accounts: 16},               // wazo
	{Name: "T74W", Code: "184", Accounts: 16},               // wazo
	{Name: "T77U", Code: "188", Accounts: 16},               // wazo
	{Name: "T85W", Code: "196", Accounts: 16},               // wazo
	{Name: "T87W", Code: "197", Accounts: 16},               // wazo
	{Name: "T88V", Code: "192", Accounts: 16},               // wazo
	{Name: "T88W", Code: "192", Accounts: 16},               // wazo
	{Name: "CP860", Code: "037", Accounts: 1},               // datasheet
	{Name: "CP920", Code: "078", Accounts: 1},               // wazo
	{Name: "CP925", Code: "148", Accounts: 1},               // datasheet
	{Name: "CP960", Code: "073", Accounts: 1},               // datasheet
	{Name: "CP965", Code: "143", Accounts: 1},               // datasheet
	{Name: "W52P", Code: "025", Accounts: 5, DECT: true},    // datasheet
	{Name: "W56P", Code: "025", Accounts: 5, DECT: true},    // datasheet
	{Name: "W60B", Code: "077", Accounts: 8, DECT: true},    // datasheet
	{Name: "CP930W", Code: "077", Accounts: 8, DECT: true},  // datasheet; same base as W60B
	{Name: "W70B", Code: "146", Accounts: 10, DECT: true},   // wazo
	{Name: "W75B", Code: "175", Accounts: 20, DECT: true},   // wazo; code unverified
	{Name: "W75DM", Code: "175", Accounts: 20, DECT: true},  // wazo; code unverified
	{Name: "W80B", Code: "103", Accounts: 100, DECT: true},  // wazo
	{Name: "W80DM", Code: "103", Accounts: 100, DECT: true}, // wazo
	{Name: "W90B", Code: "130", Accounts: 250, DECT: true},  // wazo
	{Name: "W90DM", Code: "130", Accounts: 250, DECT: true}, // wazo
}

var modelIndex = func() map[string]Model {
	m := make(map[string]Model, len(models))
	for _, md := range models {
		m[md.Name] = md
	}
	return m
}()

// Models lists every supported model, by name.
func Models() []Model {
	out := append([]Model(nil), models...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// LookupModel finds a model by name, tolerant of how User-Agents and admins
// spell it: any case, with or without "SIP-", "SIP " or "VP-" in front, and
// "T19P E2" or "T19P-E2" for "T19P_E2".
func LookupModel(name string) (Model, bool) {
	n := strings.ToUpper(strings.TrimSpace(name))
	for _, p := range []string{"SIP-", "SIP ", "VP-"} {
		n = strings.TrimPrefix(n, p)
	}
	n = strings.TrimSpace(n)
	n = strings.NewReplacer(" ", "_", "-", "_").Replace(n)
	m, ok := modelIndex[n]
	return m, ok
}
