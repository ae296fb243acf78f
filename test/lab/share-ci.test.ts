// "CI on a share" (issue 16), the focused version CI runs: in one guest, on
// duofs virtio-fs and duofs virtio-9p (each on its own fresh export, duofs at
// --log-level warn), test/lab/guest/scenarios/share-ci.py makes a git
// repository of 100 generated files in three commits, `git gc --aggressive`,
// `git fsck --strict`, `git clone`s it, and checks the clone. Both servers
// must give the same results, the commit ids must be the ones git makes of
// that tree on the host's own disk (git ids depend only on the contents,
// modes, names and dates, which the scenario fixes; virtiofsd and QEMU's 9p
// give the same ones in `npm run lab:share-ci`), and duofs must print
// nothing at warn. 100 files keep it near a minute of guest time: over 9p
// each of git's many small requests is a round trip (duofs-9pv and QEMU's
// 9p take ~3x virtio-fs' time, see docs/benchmarks.md).
// The full size (3000 files, the GNU hello build with make -j2, all four
// servers side by side) is `npm run lab:share-ci` (see docs/benchmarks.md).
// Needs root and `npm run lab:setup`; DUOFS_SKIP_LAB=1 skips.
import { labAvailable, tail } from './lab.js';
import { differences, duofsComplaints, runShareCi, timeTable, type ShareCiRun } from './share-ci.js';

const FILES = 100;
const PER_SERVER_S = 240;
/**
 * What git gives for the scenario's tree of FILES files, got on the host's
 * own disk (share-ci.py's run_all() with CI set to a host folder, git 2.39).
 */
const REFERENCE = {
  'git.commit1': '3f9c10d8ff0d5528a897b78eff7e01d4a33683ab',
  'git.commit2': '71b15e9b4b297ba2aa93123b1fd7ed6c1228f98f',
  'git.commit3': '0bb1ba0c1ad32e365da6eb9948fcd9069efdd44a',
  'git.tree': '1a9f71599eb3e4595a7655181206d1fab29b570a',
};

const skip = process.env.DUOFS_SKIP_LAB === '1';
const lab = labAvailable();
const d = skip ? describe.skip : describe;

d('CI on a share: git on duofs virtio-fs and duofs virtio-9p', () => {
  let r: ShareCiRun | undefined;

  beforeAll(
    async () => {
      if (!lab.ok) return;
      r = await runShareCi({ files: FILES, servers: ['duofs-vfs', 'duofs-9pv'], build: false, perServerLimitS: PER_SERVER_S });
      process.stderr.write(`lab: share-ci (${FILES} files, guest seconds):\n${timeTable(r.results)}\n`);
    },
    (2 * PER_SERVER_S + 150) * 1000,
  );

  const get = () => {
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    if (!r) throw new Error('the guest did not run (see beforeAll)');
    return r;
  };

  test('every step runs to its end on both servers', () => {
    for (const x of get().results) {
      if (x.section.rc !== 0) throw new Error(`${x.server}: scenario exited with ${x.section.rc}:\n${tail(x.section.output, 30)}`);
      expect(x.section.duplicates).toEqual([]);
      expect([...x.times.keys()]).toEqual(['gen', 'commit', 'gc', 'fsck', 'clone']);
    }
  });

  test('the repository is what git makes of the tree, packed, clean, and cloned whole', () => {
    const c = get().results[0].section.checks;
    expect(Object.fromEntries(Object.keys(REFERENCE).map((k) => [k, c.get(k)]))).toEqual(REFERENCE);
    expect({
      status: c.get('git.status'),
      loose: c.get('gc.loose_objects'),
      packs: c.get('gc.packs'),
      fsck: c.get('fsck.repo'),
      cloneHead: c.get('clone.head'),
      cloneTree: c.get('clone.tree'),
      cloneStatus: c.get('clone.status'),
      cloneFsck: c.get('clone.fsck'),
      sampledDiffer: c.get('clone.sampled_files_differ'),
      symlink: c.get('clone.symlink'),
    }).toEqual({
      status: 'clean',
      loose: '0',
      packs: '1',
      fsck: 'clean',
      cloneHead: REFERENCE['git.commit3'],
      cloneTree: REFERENCE['git.tree'],
      cloneStatus: 'clean',
      cloneFsck: 'clean',
      sampledDiffer: '0',
      symlink: 'm00/s00/f00000.c',
    });
  });

  test('both servers give the same result for every check', () => {
    expect(differences(get().results)).toEqual([]);
  });

  test('duofs printed no warning and no error', () => {
    expect(get().results.flatMap((x) => duofsComplaints(x).map((l) => `${x.server}: ${l}`))).toEqual([]);
  });
});
