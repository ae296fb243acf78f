// The classroom of issue 15: one duofs serves a class of lab guests from a
// config file. One shared read-only area for every guest, one private
// directory each, created on first use owned by the uid the admin chose.
// Each guest reads the shared area and cannot write it (not even as root),
// writes its own directory as its student uid and sees nothing of the
// others'. While the eight hold files open in their homes, a SIGHUP adds a
// ninth guest's devices: the eight's mounts and open files keep working, and
// the ninth boots and is served.
//
// Eight software-emulated guests at once are long on a 2-core machine, so
// this runs only when asked: `npm run lab:classroom` (DUOFS_LAB_CLASSROOM=1;
// DUOFS_LAB_CLASS=N for another class size). Needs root and the lab.
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expectScenarioOk, freshTree, runGuest, type GuestRun } from './guest.js';
import { duofsBin, startDuofs, type HostDaemon } from './daemons.js';
import { labAvailable, makeWorkDir, removeWorkDir, tail } from './lab.js';

const on = process.env.DUOFS_LAB_CLASSROOM === '1' && process.env.DUOFS_SKIP_LAB !== '1';
const d = on ? describe : describe.skip;
const CLASS = Number(process.env.DUOFS_LAB_CLASS ?? 8);
const uidOf = (g: number): number => 3000 + g;

interface Status {
  devices: { name: string; clients: unknown[] }[];
  lastReload?: { added: string[]; removed: string[]; kept: string[] };
}

d('the classroom: one duofs, a config file, a class of guests', () => {
  test(`${CLASS} guests share a read-only area and each have a private dir; a SIGHUP adding guest ${CLASS + 1} disturbs none`, async () => {
    const lab = labAvailable();
    if (!lab.ok) throw new Error(`lab unavailable: ${lab.why}`);
    const work = makeWorkDir('classroom');
    const shared = freshTree(work, 'shared');
    const homes = freshTree(work, 'homes');
    writeFileSync(join(shared, 'syllabus.txt'), 'week 1: filesystems\n');
    // Writable for everyone on the host: only the export's readonly keeps students out.
    chmodSync(shared, 0o1777);
    mkdirSync(join(work, 'sock'));
    const sock = (n: string): string => join(work, 'sock', `${n}.sock`);
    const ctl = join(work, 'sock', 'class.ctl');
    const config = join(work, 'class.toml');
    const writeConfig = (n: number): void => {
      const parts = [`control-socket = "${ctl}"`, `[exports.shared]\npath = "${shared}"\nreadonly = true`, `[exports.homes]\npath = "${homes}"`];
      for (let g = 1; g <= n; g++) {
        parts.push(`[devices.shared-g${g}]\ntype = "virtiofs"\nsocket = "${sock(`shared-g${g}`)}"\nexport = "shared"\ntag = "shared"`);
        parts.push(
          `[devices.home-g${g}]\ntype = "virtiofs"\nsocket = "${sock(`home-g${g}`)}"\nexport = "homes"\ndir = "g${g}"\ntag = "home"\ncreate = { uid = ${uidOf(g)}, gid = ${uidOf(g)}, mode = "0700" }`,
        );
      }
      writeFileSync(config, `${parts.join('\n\n')}\n`);
    };
    const status = (): Status =>
      JSON.parse(execFileSync(process.execPath, [duofsBin, 'status', '--control-socket', ctl, '--json'], { encoding: 'utf8' })) as Status;
    const guest = (g: number, wait: boolean): Promise<GuestRun> =>
      runGuest({
        label: `class-g${g}`,
        workDir: join(work, `g${g}`),
        timeoutMs: 1_500_000,
        memoryMiB: 384,
        scenario: 'classroom.sh',
        scenarioOn: ['home'],
        scenarioArgs: ['/mnt/shared', String(uidOf(g)), wait ? '1' : '0'],
        scenarioTimeoutSec: 1200,
        mounts: [
          { kind: 'vhost-user-fs', name: 'home', socket: sock(`home-g${g}`), tag: 'home' },
          { kind: 'vhost-user-fs', name: 'shared', socket: sock(`shared-g${g}`), tag: 'shared' },
        ],
      });

    writeConfig(CLASS);
    let duofs: HostDaemon | undefined;
    try {
      duofs = await startDuofs(
        ['serve', '--config', config, '--sandbox', 'none', '--seccomp', 'none', '--log-level', 'info'],
        [ctl, ...Array.from({ length: CLASS }, (_, i) => [sock(`shared-g${i + 1}`), sock(`home-g${i + 1}`)]).flat()],
        { readyTimeoutMs: 60_000 },
      );
      const eight = Array.from({ length: CLASS }, (_, i) => guest(i + 1, true));
      // Wait until every one of the class holds its file open, then add the next guest.
      const deadline = Date.now() + 1_200_000;
      const ready = (): number => Array.from({ length: CLASS }, (_, i) => existsSync(join(homes, `g${i + 1}`, 'ready'))).filter(Boolean).length;
      let failedEarly: unknown;
      void Promise.all(eight).catch((e: unknown) => {
        failedEarly = e;
      });
      while (ready() < CLASS) {
        if (failedEarly) throw failedEarly;
        if (Date.now() > deadline) throw new Error(`only ${ready()} of ${CLASS} guests got ready`);
        await new Promise((r) => setTimeout(r, 1000));
      }
      const before = status();
      for (let g = 1; g <= CLASS; g++) expect(before.devices.find((x) => x.name === `home-g${g}`)!.clients).toHaveLength(1);

      writeConfig(CLASS + 1);
      duofs.process.kill('SIGHUP');
      let after = status();
      for (const until = Date.now() + 60_000; after.devices.length < 2 * (CLASS + 1) && Date.now() < until; ) {
        await new Promise((r) => setTimeout(r, 200));
        after = status();
      }
      expect(after.lastReload).toMatchObject({ added: [`shared-g${CLASS + 1}`, `home-g${CLASS + 1}`], removed: [] });
      expect(after.lastReload!.kept).toHaveLength(2 * CLASS);
      for (let g = 1; g <= CLASS; g++) expect(after.devices.find((x) => x.name === `home-g${g}`)!.clients).toHaveLength(1);
      writeFileSync(join(shared, 'reloaded'), 'yes\n');

      const runs = [...(await Promise.all(eight)), await guest(CLASS + 1, false)];
      const report = runs.map((r, i) => `--- guest ${i + 1} ---\n${tail(r.sections[0]?.output ?? r.console, 30)}`).join('\n');
      try {
        runs.forEach((r, i) => {
          const g = i + 1;
          expectScenarioOk(r);
          const c = Object.fromEntries(r.sections[0]!.checks);
          expect(c).toMatchObject({
            shared_read: 'week 1: filesystems',
            shared_write: 'Read-only file system',
            shared_write_student: 'Read-only file system',
            home_owner: `${uidOf(g)}:${uidOf(g)}:700`,
            home_before: '[]',
            student_write: 'ok',
            mine_owner: String(uidOf(g)),
            dotdot: '[home,shared,]',
          });
          if (g <= CLASS)
            expect(c).toMatchObject({
              saw_reload: 'yes',
              write_after_reload: 'ok',
              open_file: '[before,after,]',
              shared_after: 'week 1: filesystems',
              home_after: '[mine,open.txt,ready,]',
            });
          // host side: the private dir holds this student's files only
          expect(statSync(join(homes, `g${g}`)).uid).toBe(uidOf(g));
          expect(readFileSync(join(homes, `g${g}`, 'mine'), 'utf8')).toBe(`student ${uidOf(g)}\n`);
        });
        expect(readdirSync(homes).sort()).toEqual(Array.from({ length: CLASS + 1 }, (_, i) => `g${i + 1}`).sort());
        expect(readdirSync(shared).sort()).toEqual(['reloaded', 'syllabus.txt']);
        console.log(`classroom: ${runs.length} guests, boot ${runs.map((r) => Math.round((r.bootMs ?? 0) / 1000)).join('/')} s`);
      } catch (e) {
        throw new Error(`${(e as Error).message}\n${report}\n--- duofs (tail) ---\n${tail(duofs.output(), 40)}`);
      }
    } finally {
      await duofs?.stop();
    }
    removeWorkDir(work);
  }, 2_400_000);
});
