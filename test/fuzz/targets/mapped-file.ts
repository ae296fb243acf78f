// mapped-file / mapped-xattr metadata: what a host (or an earlier QEMU) left
// in .virtfs_metadata files and user.virtfs.* attributes. Byte 0 of an input
// picks the parser, the rest is the stored bytes. Properties: never throws;
// what a parse keeps survives format -> parse unchanged.
import { formatMetadata, parseMetadata, type GuestMeta } from '../../../security/formats/mapped-file.js';
import { decodeRdev, decodeU32, encodeRdev, encodeU32 } from '../../../security/formats/mapped-xattr.js';
import { Finding, type FuzzTarget } from '../engine.js';

/** Field by field (key order is how the input happened to list them, not part of the meaning). */
const same = (a: GuestMeta, b: GuestMeta): boolean => (['uid', 'gid', 'mode', 'rdev'] as const).every((k) => a[k] === b[k]);

export const mappedFileTarget: FuzzTarget = {
  name: 'mapped-file',
  describe: 'mapped-file .virtfs_metadata text (parseMetadata/formatMetadata) and mapped-xattr user.virtfs.* values',
  maxLen: 5000,
  dictionary: ['virtfs.uid=', 'virtfs.gid=', 'virtfs.mode=', 'virtfs.rdev=', '\n', '-', '4294967295', '-2147483648', '2147483648'].map((s) =>
    Buffer.from(s),
  ),
  seeds: () => [
    Buffer.from('\0virtfs.uid=1000\nvirtfs.gid=1000\nvirtfs.mode=33188\nvirtfs.rdev=0\n'),
    Buffer.from('\0virtfs.uid=-2\nvirtfs.mode=8630\nvirtfs.rdev=2049\n'),
    Buffer.from('\0virtfs.uid=0\r\nbogus\nvirtfs.gid=99999999999\n'),
    Buffer.from([1, 0xe8, 0x03, 0, 0]),
    Buffer.from([2, 1, 8, 0, 0, 0, 0, 0, 0]),
  ],
  async start() {
    return {
      exec(input: Buffer) {
        const kind = input[0] ?? 0;
        const rest = input.subarray(1);
        if (kind % 3 === 0) {
          const p = parseMetadata(rest);
          const again = parseMetadata(formatMetadata(p.meta));
          if (!same(again.meta, p.meta) || again.problems.length) {
            throw new Finding('property', `format(parse(x)) does not parse back: ${JSON.stringify(formatMetadata(p.meta).toString())}`);
          }
        } else if (kind % 3 === 1) {
          const v = decodeU32(rest);
          if (v !== undefined && !encodeU32(v).equals(rest)) throw new Finding('property', 'encodeU32(decodeU32(b)) != b');
          if (v === undefined && rest.length === 4) throw new Finding('property', 'a 4-byte value was refused');
        } else {
          const v = decodeRdev(rest);
          if (v !== undefined && !encodeRdev(v).equals(rest)) throw new Finding('property', 'encodeRdev(decodeRdev(b)) != b');
          if (v === undefined && rest.length === 8) throw new Finding('property', 'an 8-byte value was refused');
        }
      },
      check() {},
      stop() {},
    };
  },
};
