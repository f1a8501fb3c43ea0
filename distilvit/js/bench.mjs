// Time captions with stock transformers.js in Node: a fixed number of generated tokens (EOS ignored through
// min_new_tokens), each repeat followed by the same with one token (vision encoder + prefill only); the caller
// picks the median run (distilvit.bench_runtime.median_run).
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
  const t0 = performance.now();
  await captioner(request.image, { max_new_tokens: tokens, min_new_tokens: tokens });
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
  return performance.now() - t0;
};
await time(request.tokens); // warm-up
const caption = [], first = [];
for (let i = 0; i < request.repeats; i++) {
  caption.push(await time(request.tokens));
  first.push(await time(1));
}
process.stdout.write(JSON.stringify({ load_ms: loadMs, caption_ms: caption, first_token_ms: first,
  peak_mib: (peakRss - startRss) / 2 ** 20 }));
