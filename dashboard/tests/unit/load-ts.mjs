// Loads the dashboard's TypeScript modules (lib/*.ts) into a unit test: each file and the
// local modules it imports ('@/…' and './…') are compiled with the TypeScript compiler the
// project already has (transpileModule: types dropped, nothing checked - `npm run
// typecheck` does that) into a temporary directory, then imported. Node 20 runs no .ts
// itself, and this needs no package beyond node:test.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ts from 'typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// Inside the dashboard (tests/out is ignored by git) so that packages resolve from there.
mkdirSync(path.join(root, 'tests', 'out'), { recursive: true });
const out = mkdtempSync(path.join(root, 'tests', 'out', 'unit-'));
process.on('exit', () => rmSync(out, { recursive: true, force: true }));
const done = new Map(); // source path -> compiled path

function resolveLocal(spec, fromFile) {
  let base;
  if (spec.startsWith('@/')) base = path.join(root, spec.slice(2));
  else if (spec.startsWith('./') || spec.startsWith('../')) base = path.resolve(path.dirname(fromFile), spec);
  else return null; // a package or node: builtin
  for (const cand of [base, `${base}.ts`, `${base}.tsx`, path.join(base, 'index.ts')]) {
    if (cand.match(/\.tsx?$/) && existsSync(cand)) return cand;
  }
  throw new Error(`load-ts: cannot resolve ${spec} from ${fromFile}`);
}

function compile(file) {
  if (done.has(file)) return done.get(file);
  const target = path.join(out, path.relative(root, file)).replace(/\.tsx?$/, '.mjs');
  done.set(file, target);
  const { outputText } = ts.transpileModule(readFileSync(file, 'utf8'), {
    fileName: file,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      jsx: ts.JsxEmit.ReactJSX,
      esModuleInterop: true,
    },
  });
  const code = outputText.replace(/(\bfrom\s*|\bimport\s*\(?\s*)(['"])([^'"]+)\2/g, (m, pre, q, spec) => {
    const local = resolveLocal(spec, file);
    if (!local) return m;
    return `${pre}${q}${pathToFileURL(compile(local)).href}${q}`;
  });
  mkdirSync(path.dirname(target), { recursive: true });
  writeFileSync(target, code);
  return target;
}

/** Imports a dashboard module by its path from the dashboard root, e.g. 'lib/format.ts'. */
export function loadTs(rel) {
  return import(pathToFileURL(compile(path.join(root, rel))).href);
}
