/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests: every line
 * must be a HELP, a TYPE or a sample of a declared family, label values must be properly quoted
 * and escaped, a series may appear once, and values must be numbers. Anything else throws.
 */

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Exposition {
  types: Map<string, string>;
  samples: Sample[];
  /** Value of one series, e.g. get('x_total', { cache: 'attr' }); undefined when absent. */
  get(name: string, labels?: Record<string, string>): number | undefined;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

function parseValue(text: string, line: string): number {
  // Prometheus reads values with Go's ParseFloat, which takes NaN and Inf in any case; prom-client
  // writes 'Nan' (e.g. the event-loop lag before its first sample), so the check must accept it too.
  const special = text.toLowerCase();
  if (special === '+inf' || special === 'inf' || special === '+infinity' || special === 'infinity') return Infinity;
  if (special === '-inf' || special === '-infinity') return -Infinity;
  if (special === 'nan') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new Error(`bad value in: ${line}`);
  return Number(text);
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq < 0) throw new Error(`label without '=' in: ${line}`);
    const key = text.slice(i, eq);
    if (!LABEL.test(key)) throw new Error(`bad label name '${key}' in: ${line}`);
    if (text[eq + 1] !== '"') throw new Error(`unquoted label value in: ${line}`);
    let value = '';
    let j = eq + 2;
    for (; j < text.length && text[j] !== '"'; j++) {
      if (text[j] === '\\') {
        const next = text[++j];
        if (next === 'n') value += '\n';
        else if (next === '\\' || next === '"') value += next;
        else throw new Error(`bad escape in: ${line}`);
      } else if (text[j] === '\n') {
        throw new Error(`raw newline in label value: ${line}`);
      } else value += text[j];
    }
    if (j >= text.length) throw new Error(`unterminated label value in: ${line}`);
    if (key in labels) throw new Error(`duplicate label '${key}' in: ${line}`);
    labels[key] = value;
    i = j + 1;
    if (i < text.length) {
      if (text[i] !== ',') throw new Error(`expected ',' between labels in: ${line}`);
      i++;
    }
  }
  return labels;
}

function familyOf(name: string, types: Map<string, string>): string | undefined {
  if (types.has(name)) return name;
  for (const suffix of ['_bucket', '_sum', '_count', '_total', '_created']) {
    if (name.endsWith(suffix)) {
      const base = name.slice(0, -suffix.length);
      if (types.has(base)) return base;
    }
  }
  return undefined;
}

function key(name: string, labels: Record<string, string>): string {
  return `${name}{${Object.keys(labels).sort().map((k) => `${k}=${JSON.stringify(labels[k])}`).join(',')}}`;
}

export function parsePromText(body: string): Exposition {
  if (!body.endsWith('\n')) throw new Error('exposition does not end with a newline');
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples: Sample[] = [];
  const seen = new Map<string, number>();
  for (const line of body.slice(0, -1).split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (m === null) {
        if (line.startsWith('# HELP') || line.startsWith('# TYPE')) throw new Error(`bad comment: ${line}`);
        continue;
      }
      const [, kind, name, rest] = m;
      if (!NAME.test(name)) throw new Error(`bad metric name: ${line}`);
      if (kind === 'HELP') {
        if (helps.has(name)) throw new Error(`second HELP for ${name}`);
        helps.add(name);
      } else {
        if (!TYPES.has(rest)) throw new Error(`bad type: ${line}`);
        if (types.has(name)) throw new Error(`second TYPE for ${name}`);
        types.set(name, rest);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?$/.exec(line);
    if (m === null) throw new Error(`bad sample line: ${line}`);
    const [, name, , labelText, valueText] = m;
    if (familyOf(name, types) === undefined) throw new Error(`sample of an undeclared family: ${line}`);
    const labels = labelText === undefined ? {} : parseLabels(labelText, line);
    const k = key(name, labels);
    if (seen.has(k)) throw new Error(`series twice: ${k}`);
    const value = parseValue(valueText, line);
    seen.set(k, value);
    samples.push({ name, labels, value });
  }
  return { types, samples, get: (name, labels = {}) => seen.get(key(name, labels)) };
}
