/**
 * The command line as an admin meets it: mistakes are one line on stderr and exit status 2,
 * never a stack trace; --help documents every flag; SIGTERM stops the server cleanly.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectUserError, runCli } from '../helpers/cli-run.js';
import { ServerProcess } from '../helpers/server-process.js';

let work: string;

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'cnfs-cli-'));
});

afterAll(() => {
  fs.rmSync(work, { recursive: true, force: true });
});

const cli = (args: string[]) => runCli(args);

describe('clear errors', () => {
  it('a missing export directory', () => {
    expectUserError(cli(['serve', path.join(work, 'nope'), '--no-portmap']), /export directory .*nope does not exist/);
  });

  it('a bad exports line names the file and the line', () => {
    const conf = path.join(work, 'exports');
    fs.writeFileSync(conf, `# comment\n${work} 127.0.0.1(rw)\n${work}/x 10.0.0.0/33(ro)\n`);
    expectUserError(cli(['serve', '--config', conf, '--no-portmap']), new RegExp(`${conf}:3: .*prefix length`));
  });

  it('a port that is already taken', async () => {
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      expectUserError(cli(['serve', work, '--bind', '127.0.0.1', '--nfs-port', String(port), '--no-portmap']), /NFS port .* already in use.*--nfs-port/);
    } finally {
      blocker.close();
    }
  });

  it('a port number out of range', () => {
    const r = cli(['serve', work, '--nfs-port', '70000']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/not a port number/);
  });
});

describe('help and lifecycle', () => {
  it('--help documents every flag, --version prints the package version', () => {
    const help = cli(['serve', '--help']).stdout;
    for (const flag of ['--config', '--bind', '--nfs-port', '--mount-port', '--portmap-port', '--no-portmap', '--metrics-port', '--state-dir']) {
      expect(help).toContain(flag);
    }
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
    expect(cli(['--version']).stdout.trim()).toBe(pkg.version);
  });

  it('serves the bundled sample export when given no directory, and exits 0 on SIGTERM', async () => {
    const port = 30000 + Math.floor(Math.random() * 20000);
    const proc = await ServerProcess.startOnHost(['--bind', '127.0.0.1', '--nfs-port', String(port), '--mount-port', String(port + 1), '--no-portmap', '--state-dir', path.join(work, 'st')]);
    const served = proc.log.find((l) => l.includes('clusternfs serving'));
    expect(served).toMatch(/sample\/root/);
    expect(await proc.stop()).toBe(0);
  });
});
