// --help for duofs-virtiofsd: virtiofsd's options as duofs treats them.
import { MAX_TAG_LEN } from './args.js';

export function helpText(name: string): string {
  return `Serve a host directory with duofs, started with virtiofsd's command line.

Usage: ${name} --shared-dir <DIR> (--socket-path <PATH> | --fd <N>) [OPTIONS]
       ${name} --fd=<N> -o source=<DIR>[,cache=MODE][,xattr][,flock|no_flock][,posix_lock|no_posix_lock]   (libvirt's form)

Options (virtiofsd's):
      --shared-dir <DIR>          the export
      --socket-path <PATH>        vhost-user socket to listen on (--socket: deprecated alias)
      --socket-group <GROUP>      give that socket to GROUP, mode 0660
      --fd <N>                    inherited listening vhost-user socket (libvirt)
      --tag <TAG>                 mount tag in the device's config space (1-${MAX_TAG_LEN} bytes)
      --cache <auto|always|metadata|never>   FUSE caching policy [default: auto]
      --writeback                 writeback cache in the guest
      --xattr                     pass extended attributes through
      --xattrmap <RULES>          rename/hide/refuse xattr names (:prefix|ok|bad|unsupported:all|client|server:KEY:PREPEND:, :map:KEY:PREPEND:)
      --posix-acl[=never|auto|always]   POSIX ACLs (implies --xattr) [default: never; bare: always]
      --security-label[=never|auto|always]   label new files with the guest's security context (FUSE_SECURITY_CTX; implies --xattr) [default: never; bare: always]
      --allow-mmap                shared mmap with --cache=never|metadata (FUSE_DIRECT_IO_ALLOW_MMAP)
      --allow-direct-io           keep a guest's O_DIRECT on the host fd (dropped by default)
      --no-readdirplus            do not offer READDIRPLUS
      --readonly                  refuse every change with EROFS
      --announce-submounts        announce host mount points inside the export [default]
      --no-announce-submounts     do not
      --translate-uid <RULE>      map|guest|host|squash-guest|squash-host:A:B:COUNT, forbid-guest:A:COUNT
      --translate-gid <RULE>      same, for group ids
      --uid-map <:NS_UID:HOST_UID:COUNT:>   as a non-root user: map host uids into the
                                  sandbox's user namespace (repeatable; newuidmap, /etc/subuid;
                                  libvirt's session mode); the server is uid 0 there
      --gid-map <:NS_GID:HOST_GID:COUNT:>   the same for gids (newgidmap, /etc/subgid)
      --sandbox <namespace|chroot|none>     confine the server [default: namespace]
      --seccomp <kill|log|trap|none>        system-call allow-list [default: kill]
      --modcaps <+cap:-cap>       change the capabilities the server keeps
      --log-level <error|warn|info|debug|trace|off>   [default: info]
      --syslog                    log to syslog (/dev/log) [default: stderr]
      --rlimit-nofile <N>         open-file limit (0: leave it)
      --thread-pool-size <N>      threads for blocking I/O where io_uring is not used [default: 16;
                                  0 keeps the default: duofs never serves blocking I/O inline]
      --migration-on-error <abort|guest-error>   live migration: a file that cannot be found
                                  again fails the migration, or answers EIO [default: abort]
      --print-capabilities        print the vhost-user backend JSON and exit
  -o <OPTS>                       legacy form: source=, cache=auto|always|none|metadata, loglevel=,
                                  sandbox=, xattrmap=, xattr, no_xattr, writeback, no_writeback,
                                  announce_submounts, readdirplus, no_readdirplus, posix_acl,
                                  no_posix_acl, flock, no_flock, posix_lock, no_posix_lock
                                  (duofs takes host locks unless no_flock / no_posix_lock)
  -d                              log level debug
  -h, --help / -V, --version

Accepted without effect (see compat/virtiofsd/README.md for why):
  --inode-file-handles=never|prefer|fallback,
  --killpriv-v2, --no-killpriv-v2 (duofs always offers it), --preserve-noatime, -f,
  --migration-mode=find-paths (the only mode),
  --migration-confirm-paths (paths are always checked when the state is saved)

Refused (duofs has no equivalent):
  --migration-mode=file-handles,
  --migration-verify-handles, --inode-file-handles=mandatory

duofs extensions:
      --security-model <passthrough|mapped-xattr|mapped-file|none>   [default: passthrough]
      --fmode <OCTAL>, --dmode <OCTAL>   host modes of files/dirs created in the mapped models
      --log-format <text|json>    text: virtiofsd's lines [default]; json: pino's JSON lines
      --io-engine <auto|io_uring|threads|sync>   where blocking I/O runs [default: auto]

Environment: DUOFS_VIRTIOFSD_DRY_RUN=1 prints the resulting serve options as JSON and exits.
`;
}
