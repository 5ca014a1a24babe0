// Package store is dialtone's domain: accounts, phone users, SIP credentials,
// registrations (bindings), licences, admin tokens, the audit log, devices and
// provisioning secrets, queues, callflows (versioned), numbers, groups,
// offboarding jobs and call records, with the rules of docs/account-model.md
// enforced inside the bbolt write transaction that changes them.
//
// # Basics
//
// Open a store with [Open]; every exported method is safe for concurrent use.
// Writes are one bbolt Update each, or share one through the group commit
// (REGISTER, call records, provisioning fetches), and a method that returns
// nil has put its change on disk, with one exception: a pure refresh (a
// REGISTER that only moves an expiry) is answered before its write and
// written within Options.RefreshWriteDelay (docs/design.md, "The durability
// contract"; store/refresh.go).
//
// # The invariant
//
// A user with a live registration cannot be deleted. [DB.Register] checks that
// the user exists (and is enabled, when adding bindings) and writes the binding
// in one transaction; [DB.DeleteUser] looks for live bindings and deletes in one
// transaction. bbolt allows one writer at a time, so the two never interleave;
// a pure refresh is checked and recorded under a gate every update
// transaction holds until its commit, and the deletion check reads it.
// "Live" means ExpiresAt is after Options.Now(); expired rows never count, whether
// or not a sweeper has removed them yet.
// [DB.LiveBindings] (the dialtone_sip_registrations_live gauge, registered by
// [DB.RegisterMetrics]) is kept as bindings are written and deleted, and
// takes out expired ones by their expiry time when read, so it is exact
// without scanning and without waiting for a sweep.
//
// # Errors
//
// Methods return ErrNotFound, ErrExists, *ValidationError, *InUseError or
// *RuleError (wrapped with context); match them with errors.Is and errors.As.
package store
