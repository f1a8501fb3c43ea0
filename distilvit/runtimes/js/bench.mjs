// Time captions with stock transformers.js in Node: a fixed number of generated tokens (EOS ignored through
// min_new_tokens), median over repeats; each run's first token (preprocessing + encoder + prefill + the first step)
// is timed inside it through generate's streamer; the caller picks the median run (distilvit.bench.runners.median_run).
// Input (stdin, JSON): {model_dir, dtype, image, tokens, repeats}
// Output (stdout, JSON): {load_ms, caption_ms: [...], first_token_ms: [...],
//                         peak_mib (resident memory added since before the model loaded, sampled after each caption)}
import { readFileSync } from 'node:fs';
import { pipeline } from '@huggingface/transformers';
import { useLocalModel } from './offline.mjs';

const request = JSON.parse(readFileSync(0, 'utf8'));
const startRss = process.memoryUsage().rss; // before the model loads
let peakRss = startRss;
const started = performance.now();
const captioner = await pipeline('image-to-text', useLocalModel(request.model_dir), { dtype: request.dtype, device: 'cpu' });
const loadMs = performance.now() - started;
const time = async (tokens) => {
  const marks = []; // generate puts the prompt first, then each generated token
  const streamer = { put: () => marks.push(performance.now()), end: () => {} };
  const t0 = performance.now();
  await captioner(request.image, { max_new_tokens: tokens, min_new_tokens: tokens, streamer });
  const total = performance.now() - t0;
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
  return { total, first: marks[1] - t0 };
};
await time(request.tokens); // warm-up
const caption = [], first = [];
for (let i = 0; i < request.repeats; i++) {
  const run = await time(request.tokens);
  caption.push(run.total);
  first.push(run.first);
}
process.stdout.write(JSON.stringify({ load_ms: loadMs, caption_ms: caption, first_token_ms: first,
  peak_mib: (peakRss - startRss) / 2 ** 20 }));
