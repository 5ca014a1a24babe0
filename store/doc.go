// Package store is dialtone's domain: accounts, phone users, SIP credentials,
// registrations (bindings), licences, admin tokens, the audit log, devices and
// provisioning secrets, queues, callflows (versioned), numbers, groups,
// offboarding jobs and call records, with the rules of API.md enforced inside
// the bbolt write transaction that changes them.
//
// # Basics
//
// Open a store with [Open]; every exported method is safe for concurrent use.
// Writes are one bbolt Update (or Batch, for REGISTER) each, and a method that
// returns nil has put its change on disk.
//
// # The invariant
//
// A user with a live registration cannot be deleted. [DB.Register] checks that
// the user exists (and is enabled, when adding bindings) and writes the binding
// in one transaction; [DB.DeleteUser] looks for live bindings and deletes in one
// transaction. bbolt allows one writer at a time, so the two never interleave.
// "Live" means ExpiresAt is after Options.Now(); expired rows never count, whether
// or not a sweeper has removed them yet.
//
// # Errors
//
// Methods return ErrNotFound, ErrExists, *ValidationError, *InUseError or
// *RuleError (wrapped with context); match them with errors.Is and errors.As.
// A commit the disk had no room for returns ErrNoSpace (nothing was written;
// retry once space is freed); [DB.CommitFailures], [DB.WriteError] and
// [DB.ProbeWrite] report write health.
//
// # Operations
//
// [DB.WriteBackup] writes a consistent backup (tar of secret.key and a
// snapshot of the bbolt file) while writes go on; [BackupDir] does it for a
// stopped directory and [Restore] unpacks one into an empty directory.
// [OpenReadOnly] opens a directory for inspection ([DB.Check], [DB.Stats])
// without changing it. [DB.PruneAudit] and [DB.PruneCalls] delete old
// entries in small batches (retention).
package store
