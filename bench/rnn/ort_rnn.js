// ONNX Runtime column of bench_rnn.py (npm's onnxruntime-node, CPU execution provider): greedy
// decoding with the files of export_onnx.py, the encoder once, then STEPS calls of the step
// model with the argmax fed back (eos not checked), as an onnxruntime-node application would
// write the loop (state and encoder outputs passed back as ort.Tensors, no IO binding).
//
//   NODE_PATH=bench/e2e/node_modules node ort_rnn.js ONNX_DIR SRC.i64 B S STEPS THREADS REPS [LSTM]
//
// Sessions as bench/e2e/ort_worker.js: graphOptimizationLevel 'all', intraOpNumThreads =
// THREADS, interOpNumThreads 1, sequential. Prints one JSON line: median_ms (encode + STEPS),
// encode_ms (median), tokens (of the last repetition, [B][STEPS]).
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const now = () => Number(process.hrtime.bigint()) / 1e6;  // ms
const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
};

async function main() {
  const [dir, srcPath, bArg, sArg, stepsArg, thrArg, repsArg, lstmArg] = process.argv.slice(2);
  const [B, S, steps, threads, reps] = [bArg, sArg, stepsArg, thrArg, repsArg].map(Number);
  const lstm = lstmArg === 'lstm';
  const options = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  };
  const enc = await ort.InferenceSession.create(path.join(dir, 'encoder.onnx'), options);
  const step = await ort.InferenceSession.create(path.join(dir, 'step.onnx'), options);
  const buf = fs.readFileSync(srcPath);
  const ids = new BigInt64Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
  const srcIds = new ort.Tensor('int64', ids, [B, S]);
  const srcPad = new ort.Tensor('uint8', new Uint8Array(B * S), [B, S]);  // no padding
  const bos = 1n;

  async function once(tokens) {
    const t0 = now();
    const e = await enc.run({src_ids: srcIds, src_pad: srcPad});
    const tEnc = now() - t0;
    let y = new ort.Tensor('int64', new BigInt64Array(B).fill(bos), [B]);
    let s = e.s0;
    let c = lstm ? e.c0 : null;
    for (let i = 0; i < steps; ++i) {
      const feeds = {y_prev: y, s, memory: e.memory, keys: e.keys, src_pad: srcPad};
      if (lstm) feeds.c = c;
      const o = await step.run(feeds);
      s = o.s_new;
      if (lstm) c = o.c_new;
      const lg = o.logits.data;
      const v = o.logits.dims[1];
      const next = new BigInt64Array(B);
      for (let b = 0; b < B; ++b) {
        let best = 0;
        for (let k = 1; k < v; ++k)
          if (lg[b * v + k] > lg[b * v + best]) best = k;
        next[b] = BigInt(best);
        if (tokens) tokens[b].push(best);
      }
      y = new ort.Tensor('int64', next, [B]);
    }
    return [now() - t0, tEnc];
  }

  await once(null);  // warm-up
  const totals = [];
  const encs = [];
  let tokens = null;
  for (let r = 0; r < reps; ++r) {
    tokens = Array.from({length: B}, () => []);
    const [t, te] = await once(tokens);
    totals.push(t);
    encs.push(te);
  }
  process.stdout.write(
      JSON.stringify({median_ms: median(totals), encode_ms: median(encs), tokens}) + '\n');
}

main().catch((e) => {
  process.stderr.write(String(e && e.stack ? e.stack : e) + '\n');
  process.exit(1);
});
