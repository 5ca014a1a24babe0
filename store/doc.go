// Package store is dialtone's domain: accounts, phone users, SIP credentials,
// registrations (bindings), licences, admin tokens, the audit log, devices and
// provisioning secrets, queues, callflows (versioned), numbers, groups,
// offboarding jobs and call records, with the rules of docs/account-model.md
// enforced inside the write transaction that changes them.
//
// # Backends
//
// The rules are written once, against a transaction of named buckets of
// ordered keys (kv.go). [Open] keeps them in one bbolt file in a data
// directory (the default, and what everything below describes); [OpenEtcd]
// keeps them in an etcd cluster that several dialtone nodes share, where each
// write transaction commits only if nothing it read changed meanwhile
// (etcd.go; docs/design.md, "Several nodes (etcd)"). Backup, Check's page check
// and the durability contract's refresh overlay are bbolt's only. On etcd a
// binding row stores a horizon, later than its true expiry, which the node
// holding the phone's flow keeps in memory and answers pure refreshes from;
// every row lives on that node's etcd lease (refresh.go, etcdlease.go).
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
// transaction. bbolt allows one writer at a time, so the two never interleave
// (on etcd the second to commit fails its compare and runs again);
// a pure refresh is checked and recorded under a gate every update
// transaction holds until its commit, and the deletion check reads it.
// "Live" means ExpiresAt is after Options.Now(); expired rows never count, whether
// or not a sweeper has removed them yet.
// [DB.LiveBindings] (the dialtone_sip_registrations_live gauge, registered by
// [DB.RegisterMetrics]) is kept as bindings are written and deleted, and
// takes out expired ones by their expiry time when read, so it is exact
// without scanning and without waiting for a sweep.
//
// # Secrets at rest and bad data
//
// SIP passwords and provisioning keys and passwords are sealed with AES-256-GCM
// under DATA/secret.key, each bound to its record (kind, account, id) as GCM
// additional data: a sealed blob copied into another record does not open
// (seal.go describes the format and the one-time rewrite of older blobs).
// Admin tokens are stored as SHA-256 hashes only.
//
// [Open] refuses data it cannot trust, with an error matching [ErrDamaged]
// that says what to do: an empty or truncated data file, a missing
// secret.key when sealed secrets exist, a secret.key that does not belong
// to the file, a record in a format this build cannot read, a page whose
// damage makes bbolt panic. [DB.Check] finds the rest of what it can
// (bbolt's page check, records that do not decode, sealed passwords that do
// not open, dangling references); only the latter do not match ErrDamaged.
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
//
// # Memory
//
// Bindings live in the memory-mapped file, not the Go heap; the store's
// indexes hold ~85 bytes a binding (refresh hints, sweep and live-count
// indexes) and its identity cache at most 8,192 answers. Pages of the file
// that reads mapped in count in the process's resident memory; they are
// let go after Open and within Options.TrimInterval once the store is not
// busy (store/mapping.go).
package store
