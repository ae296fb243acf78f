// What `duofs-virtiofsd --print-capabilities` prints: the vhost-user backend
// capabilities JSON (QEMU docs/interop/vhost-user.json, "VhostUserBackendCapabilitiesFs"),
// in the layout virtiofsd prints it.
//
// virtiofsd 1.14 prints the features migrate-precopy,
// posix-acl-negotiation-mode, security-label-negotiation-mode and
// separate-options. duofs lists only what it honours:
//
// * posix-acl-negotiation-mode: listed; --posix-acl=never|auto|always work
//   as in virtiofsd (protocols/fuse/session.ts INIT).
// * migrate-precopy: listed. duofs keeps the dirty log (LOG_ALL, LOG_SHMFD)
//   and transfers the device state (DEVICE_STATE, find-paths), see
//   docs/live-migration.md.
// * security-label-negotiation-mode: listed; --security-label=never|auto|always
//   work as in virtiofsd (FUSE_SECURITY_CTX, protocols/fuse/session.ts).
// * separate-options: duofs does accept --shared-dir, --cache and the other
//   separate options, but libvirt (10.x to at least 12.8) reacts to this
//   feature by switching from `-o source=...,cache=...,xattr,flock,posix_lock`
//   to the separate options AND refusing every <lock posix=... flock=.../>
//   element ("locking options are not supported by this virtiofsd"). duofs
//   does support host locks, so it keeps libvirt on the `-o` form, which
//   carries them. libvirt 9.x always uses the `-o` form.

export const CAPABILITY_FEATURES: readonly string[] = ['migrate-precopy', 'posix-acl-negotiation-mode', 'security-label-negotiation-mode'];

export function capabilitiesJson(): string {
  return JSON.stringify({ type: 'fs', features: CAPABILITY_FEATURES }, null, 2) + '\n';
}
