//! The platform-neutral read-only tree of a backup (mirror, increments, snapshots, history),
//! served to the kernel by the adapters in `backup-platform`; unit-testable without a mount.
