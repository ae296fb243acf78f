// fio's JSON output, parsed on the host (recorded output of fio 3.41 from a lab guest).
import { describe, expect, test } from '@jest/globals';
import { FioParseError, extractJson, fioMetrics, mainSide, parseFioOutput } from '../../src/bench/fio.js';
import { readFixture } from './fixtures.js';

describe('parseFioOutput', () => {
  test('a sequential read: bandwidth, IOPS, latency, options', () => {
    const r = parseFioOutput(readFixture('r0-seq-read-virtiofsd.fio.json'));
    expect(r.fioVersion).toBe('fio-3.41');
    expect(r.jobName).toBe('seq-read');
    expect(r.error).toBe(0);
    expect(r.read.bwBytes).toBe(954775348);
    expect(r.read.ioBytes).toBeGreaterThan(0);
    expect(r.write.ioBytes).toBe(0);
    expect(r.options.rw).toBe('read');
    expect(r.options.direct).toBe('1');
    expect(mainSide(r)).toBe('read');
    const m = fioMetrics(r);
    expect(m.mbps).toBeCloseTo(954.775348, 5);
    expect(m.iops).toBeCloseTo(910.544728, 5);
    expect(m.latUs).toBeCloseTo(1067.474772, 3);
    expect(r.notes).toEqual([]);
  });

  test('a write job reports its write side', () => {
    const r = parseFioOutput(readFixture('r0-seq-write-qemu-9p.fio.json'));
    expect(mainSide(r)).toBe('write');
    expect(fioMetrics(r).mbps).toBeCloseTo(18.262571, 5);
    expect(fioMetrics(r).iops).toBeCloseTo(17.416546, 5);
  });

  test('random libaio reads keep their completion percentiles', () => {
    const r = parseFioOutput(readFixture('r0-rand-read-aio-duofs-virtiofs.fio.json'));
    expect(r.options.ioengine).toBe('libaio');
    expect(r.options.iodepth).toBe('16');
    expect(fioMetrics(r).iops).toBeCloseTo(6802.098951, 5);
    expect(r.read.clatP50Ns).toBeGreaterThan(0);
    expect(r.read.clatP99Ns!).toBeGreaterThanOrEqual(r.read.clatP50Ns!);
  });

  test('notes fio printed before the document are kept apart', () => {
    const text =
      'note: both iodepth >= 1 and synchronous I/O engine are selected, queue depth will be capped at 1\n' +
      readFixture('r0-rand-write-virtiofsd.fio.json') +
      '\nfio: some trailing remark\n';
    const r = parseFioOutput(text);
    expect(r.notes).toEqual(['note: both iodepth >= 1 and synchronous I/O engine are selected, queue depth will be capped at 1']);
    expect(fioMetrics(r).iops).toBeCloseTo(3160.41979, 4);
  });

  test('a truncated document (fio killed mid-write) is an error that says so', () => {
    const text = readFixture('r0-seq-read-virtiofsd.fio.json');
    expect(() => parseFioOutput(text.slice(0, text.length / 2))).toThrow(/truncated/);
  });

  test('no document at all', () => {
    expect(() => extractJson('')).toThrow(FioParseError);
    expect(() => parseFioOutput('fio: pid=0, err=2/file:filesetup.c:123, func=open, error=No such file')).toThrow(/no JSON document: fio: pid=0/);
  });

  test('a document without jobs, or with a missing figure, is refused', () => {
    expect(() => parseFioOutput('{\n"fio version": "fio-3.41", "jobs": []\n}')).toThrow(/no jobs/);
    const doc = JSON.parse(readFixture('r0-seq-read-virtiofsd.fio.json')) as { jobs: { read: Record<string, unknown> }[] };
    delete doc.jobs[0]!.read.bw_bytes;
    expect(() => parseFioOutput(JSON.stringify(doc, null, 1))).toThrow(/read\.bw_bytes/);
  });

  test('several jobs (numjobs without group_reporting) are summed', () => {
    const doc = JSON.parse(readFixture('r0-rand-read-aio-virtiofsd.fio.json')) as { jobs: unknown[] };
    doc.jobs = [doc.jobs[0], doc.jobs[0]];
    const r = parseFioOutput(JSON.stringify(doc, null, 1));
    expect(r.read.iops).toBeCloseTo(2 * 5386.306847, 4);
    expect(r.read.bwBytes).toBe(2 * 22062312);
    expect(r.read.latMeanNs).toBeCloseTo(2892894.471423, 3);
  });

  test('a job that reports an error code', () => {
    const doc = JSON.parse(readFixture('r0-seq-read-virtiofsd.fio.json')) as { jobs: { error: number }[] };
    doc.jobs[0]!.error = 5;
    expect(parseFioOutput(JSON.stringify(doc, null, 1)).error).toBe(5);
  });
});
