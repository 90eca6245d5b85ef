// ONNX Runtime worker of bench/e2e (npm's onnxruntime-node, CPU execution provider): loads one
// comparison's ONNX files and answers the coordinator's line protocol (see tessera_e2e.cpp).
//
//   node ort_worker.js SPEC.json THREADS [ONNX_KEY]
//
// ONNX_KEY: which map of ONNX files in the spec to load (default "onnx"; "onnx_int8" for the
// dynamically quantized graphs written by quantize_onnx.py, engine ort-int8).
//
// Sessions as in /work/shared/reference: graphOptimizationLevel 'all', intraOpNumThreads =
// THREADS, interOpNumThreads 1, sequential execution. Past/present keys and values go through JS
// (no IO binding), as an application using onnxruntime-node would do it.
'use strict';
const fs = require('fs');
const readline = require('readline');
const ort = require('onnxruntime-node');

function readRaw(desc) {
  const buf = fs.readFileSync(desc.path);
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);  // aligned copy
  if (desc.dtype === 'f32') return new ort.Tensor('float32', new Float32Array(ab), desc.shape);
  if (desc.dtype === 'i64') return new ort.Tensor('int64', new BigInt64Array(ab), desc.shape);
  throw new Error(`input ${desc.path}: dtype ${desc.dtype} not supported`);
}

function argmaxRow(data, offset, n) {
  let best = 0;
  let bv = data[offset];
  for (let i = 1; i < n; ++i) {
    if (data[offset + i] > bv) {
      bv = data[offset + i];
      best = i;
    }
  }
  return best;
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

function kvNames(prefix, n) {
  const out = [];
  for (let i = 0; i < n; ++i) out.push(`${prefix}_key_${i}`, `${prefix}_value_${i}`);
  return out;
}

async function main() {
  const [specPath, threadsArg, onnxKey = 'onnx'] = process.argv.slice(2);
  const threads = parseInt(threadsArg, 10);
  const spec = JSON.parse(fs.readFileSync(specPath, 'utf8'));
  const options = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  };
  const t0 = now();
  const sessions = {};
  if (!spec[onnxKey]) throw new Error(`spec has no "${onnxKey}" ONNX files`);
  for (const [name, path] of Object.entries(spec[onnxKey])) {
    sessions[name] = await ort.InferenceSession.create(path, options);
  }
  const cases = spec.cases.map((c) => {
    const inputs = {};
    for (const [k, v] of Object.entries(c.inputs)) inputs[k] = readRaw(v);
    return {c, inputs};
  });
  const nLayers = spec.num_layers || 0;
  process.stdout.write(JSON.stringify({ready: true, load_s: now() - t0, threads,
                                       ort: ort.env.versions.node}) + '\n');

  const runners = {
    async encoder({inputs}, out) {
      const t = now();
      const r = await sessions.model.run({src: inputs.src});
      const res = {total_s: now() - t};
      if (out) fs.writeFileSync(out, Buffer.from(r.output.data.buffer, r.output.data.byteOffset,
                                                 r.output.data.byteLength));
      return res;
    },
    async bert({inputs}, out) {
      const t = now();
      const r = await sessions.model.run(inputs);
      const res = {total_s: now() - t};
      const y = r.last_hidden_state.data;
      if (out) fs.writeFileSync(out, Buffer.from(y.buffer, y.byteOffset, y.byteLength));
      return res;
    },
    // Encoder + cross K/V once, a first step without past, then steps with past (no eos stop).
    async seq2seq({c, inputs}) {
      const t = now();
      const cross = await sessions.encoder.run({src_ids: inputs.src_ids});
      const tEnc = now() - t;
      const crossFeed = {};
      for (const name of kvNames('cross', nLayers)) crossFeed[name] = cross[name];
      let ids = new ort.Tensor('int64', BigInt64Array.from([BigInt(spec.bos_id)]), [1, 1]);
      const tokens = [];
      let past = null;
      for (let step = 0; step < c.steps; ++step) {
        const feed = {tgt_ids: ids, ...crossFeed};
        if (past) {
          kvNames('past', nLayers).forEach((n, i) => { feed[n] = past[i]; });
        }
        const r = await (past ? sessions.decoder_step : sessions.decoder_first).run(feed);
        const logits = r.logits;
        const next = argmaxRow(logits.data, 0, logits.dims[1]);
        tokens.push(next);
        past = kvNames('present', nLayers).map((n) => r[n]);
        ids = new ort.Tensor('int64', BigInt64Array.from([BigInt(next)]), [1, 1]);
      }
      const total = now() - t;
      return {total_s: total, prefill_s: tEnc, decode_s: total - tEnc, tokens};
    },
    // Prefill (logits of the last position), then `steps` steps feeding one token each.
    async causal_lm({c, inputs}, out) {
      const t = now();
      let r = await sessions.prefill.run({input_ids: inputs.input_ids});
      const vocab = r.logits.dims[1];
      let next = argmaxRow(r.logits.data, 0, vocab);
      const tPre = now() - t;
      const first = r.logits.data;
      const tokens = [next];
      const pastNames = kvNames('past', nLayers), presentNames = kvNames('present', nLayers);
      for (let step = 0; step < c.steps; ++step) {
        const feed = {input_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(next)]), [1, 1])};
        pastNames.forEach((n, i) => { feed[n] = r[presentNames[i]]; });
        r = await sessions.decode.run(feed);
        next = argmaxRow(r.logits.data, 0, vocab);
        tokens.push(next);
      }
      const total = now() - t;
      if (out) fs.writeFileSync(out, Buffer.from(first.buffer, first.byteOffset, first.byteLength));
      return {total_s: total, prefill_s: tPre, decode_s: total - tPre, tokens};
    },
  };
  const runner = runners[spec.kind];
  if (!runner) throw new Error(`unknown kind ${spec.kind}`);

  const rl = readline.createInterface({input: process.stdin});
  for await (const line of rl) {
    let reply;
    try {
      const cmd = JSON.parse(line);
      if (cmd.cmd === 'quit') break;
      reply = await runner(cases[cmd.case], cmd.out || '');
    } catch (e) {
      reply = {error: String(e && e.message ? e.message : e)};
    }
    process.stdout.write(JSON.stringify(reply) + '\n');
  }
  process.exit(0);
}

main().catch((e) => {
  process.stdout.write(JSON.stringify({ready: false, error: String(e && e.message ? e.message : e)}) + '\n');
  process.exit(2);
});
