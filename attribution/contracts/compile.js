#!/usr/bin/env node
// Compiles src/**/*.sol with solcjs (npm `solc`, pinned in package.json) through the standard-JSON interface and
// writes artifacts/<Contract>.json = {abi, bytecode, deployedBytecode, solcVersion, settings}.
//
//   node compile.js           (re)write the artifacts
//   node compile.js --check   exit 1 if the committed artifacts differ from a fresh compile (CI)
'use strict';

const fs = require('fs');
const path = require('path');

const ROOT = __dirname;
const SRC = path.join(ROOT, 'src');
const OUT = path.join(ROOT, 'artifacts');
const EXPECTED_SOLC = '0.8.37';
// Contracts that get an artifact: source unit name -> contract names.
const CONTRACTS = {
  'src/TributeLedger.sol': ['TributeLedger'],
  'src/test/Reentrant.sol': ['Reentrant'],
};
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'ipfs' },
};

function die(msg) {
  process.stderr.write(`compile.js: ${msg}\n`);
  process.exit(1);
}

function listSol(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...listSol(p));
    else if (e.name.endsWith('.sol')) out.push(p);
  }
  return out;
}

function main() {
  const args = process.argv.slice(2);
  const check = args.includes('--check');
  const unknown = args.filter((a) => a !== '--check');
  if (unknown.length) die(`unknown argument(s): ${unknown.join(' ')} (usage: node compile.js [--check])`);

  let solc;
  try {
    solc = require('solc');
  } catch (e) {
    die("cannot load npm 'solc'; run `npm ci` in attribution/contracts first");
  }
  const version = solc.version(); // e.g. 0.8.37+commit.f401782d.Emscripten.clang
  if (!version.startsWith(EXPECTED_SOLC + '+')) {
    die(`solc ${version} is installed but ${EXPECTED_SOLC} is pinned; run \`npm ci\` in attribution/contracts`);
  }

  const sources = {};
  for (const file of listSol(SRC)) {
    const unit = path.relative(ROOT, file).split(path.sep).join('/');
    sources[unit] = { content: fs.readFileSync(file, 'utf8') };
  }
  const input = {
    language: 'Solidity',
    sources,
    settings: {
      ...SETTINGS,
      outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
    },
  };

  const t0 = Date.now();
  const output = JSON.parse(solc.compile(JSON.stringify(input)));
  const ms = Date.now() - t0;
  const diags = output.errors || [];
  for (const d of diags) process.stderr.write((d.formattedMessage || d.message) + '\n');
  if (diags.some((d) => d.severity === 'error')) die('compilation failed');

  const artifacts = {};
  for (const [unit, names] of Object.entries(CONTRACTS)) {
    for (const name of names) {
      const c = output.contracts && output.contracts[unit] && output.contracts[unit][name];
      if (!c) die(`contract ${unit}:${name} missing from compiler output`);
      const artifact = {
        contractName: name,
        sourceName: unit,
        abi: c.abi,
        bytecode: '0x' + c.evm.bytecode.object,
        deployedBytecode: '0x' + c.evm.deployedBytecode.object,
        solcVersion: version,
        settings: SETTINGS,
      };
      artifacts[name] = JSON.stringify(artifact, null, 2) + '\n';
    }
  }

  if (check) {
    const stale = [];
    for (const [name, text] of Object.entries(artifacts)) {
      const file = path.join(OUT, `${name}.json`);
      const have = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
      if (have === null) stale.push(`${path.relative(ROOT, file)} (missing)`);
      else if (have !== text) stale.push(`${path.relative(ROOT, file)} (differs from a fresh compile)`);
    }
    if (stale.length) {
      die(
        `artifacts are stale:\n  ${stale.join('\n  ')}\n` +
          'run `node compile.js` in attribution/contracts and commit artifacts/'
      );
    }
    process.stdout.write(`artifacts up to date (solc ${version}, compiled in ${ms} ms)\n`);
    return;
  }

  fs.mkdirSync(OUT, { recursive: true });
  for (const [name, text] of Object.entries(artifacts)) {
    fs.writeFileSync(path.join(OUT, `${name}.json`), text);
    const bytes = (JSON.parse(text).deployedBytecode.length - 2) / 2;
    process.stdout.write(`wrote artifacts/${name}.json (runtime ${bytes} bytes)\n`);
  }
  process.stdout.write(`solc ${version}, compiled in ${ms} ms\n`);
}

main();
