// Teacher-forced logits from stock transformers.js' own generate(): a logits processor (generate's documented
// `logits_processor` argument) that, at each step, records the decoder's logits and then forces the next token to
// the one PyTorch generated there. The run goes through the same prefill and KV-cache steps as a caption, but
// every step sits at PyTorch's position, so its logits can be compared with PyTorch's step by step
// (distilvit/verify/logits.py does the comparison; this file knows nothing about PyTorch).
// Used through `forcedLogits` by parity.mjs (Node) and web-demo/parity.js (Chromium, at /forced_logits.mjs). No imports: the
// logits are a transformers.js Tensor [1, V] whose `data` is a Float32Array, modified in place.
//
// forcedRecorder(forced, watch, top) -> {processor, steps}
//   forced: token ids to feed, one per step (the last is not fed: generation stops after recording it);
//   watch:  ids whose logits every step reports (PyTorch's likeliest tokens and the forced ones);
//   top:    how many of the runtime's own highest logits each step also reports (what PyTorch did not expect).
//   steps:  filled as the run goes: [{watch: [values], top_ids: [ids], top_values: [values]}]
export function forcedRecorder(forced, watch, top) {
  const steps = [];
  const processor = (inputIds, logits) => {
    const row = logits.data;
    const step = steps.length;
    const best = [];
    for (let id = 0; id < row.length; id++) {
      const value = row[id];
      if (!Number.isFinite(value)) continue;
      if (best.length < top || value > best[best.length - 1][1]) {
        best.push([id, value]);
        best.sort((a, b) => b[1] - a[1]);
        if (best.length > top) best.pop();
      }
    }
    steps.push({
      watch: watch.map((id) => (Number.isFinite(row[id]) ? row[id] : null)),
      top_ids: best.map(([id]) => id),
      top_values: best.map(([, value]) => value),
    });
    const next = forced[Math.min(step, forced.length - 1)];
    row.fill(-Infinity);
    row[next] = 0;
    return logits;
  };
  return { processor, steps };
}

// The steps of one forced run: `inputs` as generate takes them (the image's pixels and, for llava, the prompt),
// `request` the parity request's {forced, watch, top}, `i` the image.
export async function forcedLogits(model, inputs, request, i) {
  const { processor, steps } = forcedRecorder(request.forced[i], request.watch, request.top);
  await model.generate({ ...inputs, max_new_tokens: request.forced[i].length, do_sample: false,
                         logits_processor: [processor] });
  return steps;
}
