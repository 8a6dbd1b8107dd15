/**
 * The node list of `import-snapshots --nodes`: the shapes pxeboot "nodes" files and hosts files
 * come in, and every line it cannot use named as FILE:LINE instead of a silently skipped node.
 */
import { describe, expect, it } from 'vitest';
import { NodesFileError, parseNodesFile } from '../../src/cli/nodes-file.js';

describe('parseNodesFile', () => {
  it('takes name and address in either order, hosts(5) aliases, name=ip, commas and MAC columns', () => {
    const text = [
      '# pxeboot nodes',
      'node1 10.0.0.1',
      '10.0.0.2   node2 node2.cluster   # with an alias',
      'node3=10.0.0.3',
      'node4, 10.0.0.4, 52:54:00:12:34:56',
      '',
      '  fd00::5 node5',
      'node1 10.0.0.1',
    ].join('\n');
    const nodes = parseNodesFile(text, 'nodes');
    expect([...nodes.values()].map((n) => [n.name, n.ip, n.source])).toEqual([
      ['node1', '10.0.0.1', 'nodes:2'],
      ['node2', '10.0.0.2', 'nodes:3'],
      ['node3', '10.0.0.3', 'nodes:4'],
      ['node4', '10.0.0.4', 'nodes:5'],
      ['node5', 'fd00::5', 'nodes:7'],
    ]);
  });

  it('reports every bad line with FILE:LINE and accepts none of the file', () => {
    const text = ['node1 10.0.0.1', 'node2', '10.0.0.3 10.0.0.4 node3', 'node1 10.0.0.9', 'node5 10.0.0.1', 'bad/name 10.0.0.6'].join('\n');
    let err: unknown;
    try {
      parseNodesFile(text, '/etc/nodes');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(NodesFileError);
    const msg = (err as Error).message;
    expect(msg).toMatch(/\/etc\/nodes:2: no IP address/);
    expect(msg).toMatch(/\/etc\/nodes:3: more than one IP address/);
    expect(msg).toMatch(/\/etc\/nodes:4: node node1 is already listed with 10\.0\.0\.1 at \/etc\/nodes:1/);
    expect(msg).toMatch(/\/etc\/nodes:5: address 10\.0\.0\.1 is already given to node1/);
    expect(msg).toMatch(/\/etc\/nodes:6: 'bad\/name' is not a valid node name/);
    expect(msg).not.toMatch(/nodes:1:/);
  });

  it('an empty list is an error, not an import of nothing', () => {
    expect(() => parseNodesFile('# nothing here\n\n', 'nodes')).toThrow(/no nodes listed/);
  });
});
