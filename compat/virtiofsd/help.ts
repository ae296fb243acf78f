// --help for duofs-virtiofsd: virtiofsd's options as duofs treats them.
import { MAX_TAG_LEN } from './args.js';

export function helpText(name: string): string {
  return `Serve a host directory with duofs, started with virtiofsd's command line.

Usage: ${name} --shared-dir <DIR> (--socket-path <PATH> | --fd <N>) [OPTIONS]
       ${name} --fd=<N> -o source=<DIR>[,cache=MODE][,xattr][,flock][,posix_lock]   (libvirt's form)

Options (virtiofsd's):
      --shared-dir <DIR>          the export
      --socket-path <PATH>        vhost-user socket to listen on (--socket: deprecated alias)
      --fd <N>                    inherited listening vhost-user socket (libvirt)
      --tag <TAG>                 mount tag in the device's config space (1-${MAX_TAG_LEN} bytes)
      --cache <auto|always|metadata|never>   FUSE caching policy [default: auto]
      --writeback                 writeback cache in the guest
      --xattr                     pass extended attributes through
      --readonly                  refuse every change with EROFS
      --announce-submounts        announce host mount points inside the export [default]
      --no-announce-submounts     do not
      --translate-uid <RULE>      map|guest|host|squash-guest|squash-host:A:B:COUNT, forbid-guest:A:COUNT
      --translate-gid <RULE>      same, for group ids
      --log-level <error|warn|info|debug|trace|off>   [default: info]
      --rlimit-nofile <N>         open-file limit (0: leave it)
      --print-capabilities        print the vhost-user backend JSON and exit
  -o <OPTS>                       legacy form: source=, cache=auto|always|none|metadata, loglevel=,
                                  sandbox=, xattr, no_xattr, writeback, announce_submounts,
                                  flock, posix_lock (duofs always takes host locks)
  -d                              log level debug
  -h, --help / -V, --version

Accepted without effect (see compat/virtiofsd/README.md for why):
  --thread-pool-size, --sandbox, --seccomp, --inode-file-handles=never|prefer|fallback,
  --no-killpriv-v2, --preserve-noatime, -f, --posix-acl=never, --security-label=never

Refused (duofs has no equivalent):
  --xattrmap, --posix-acl[=auto|always], --security-label[=auto|always], --uid-map, --gid-map,
  --modcaps, --syslog, --killpriv-v2, --no-readdirplus, --allow-mmap, --allow-direct-io,
  --migration-*, --inode-file-handles=mandatory, --socket-group

duofs extensions:
      --security-model <passthrough|mapped-xattr|mapped-file|none>   [default: passthrough]
      --fmode <OCTAL>, --dmode <OCTAL>   host modes of files/dirs created in the mapped models

Environment: DUOFS_VIRTIOFSD_DRY_RUN=1 prints the resulting serve options as JSON and exits.
`;
}
