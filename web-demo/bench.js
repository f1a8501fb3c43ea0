// Caption latency of stock transformers.js in this browser, for `distilvit-web bench` (distilvit/runtimes/browser.py
// drives it with Playwright). Like distilvit/runtimes/js/bench.mjs: a fixed number of generated tokens (EOS ignored through
// min_new_tokens), one warm-up, then `repeats` timed captions, each with its first token (decoding the image as the
// demo does (decode.js) + preprocessing + encoder + prefill + the first step) timed inside the same run through
// generate's streamer.
// window.bench(request) with request = {model, dtype (a string or {graph: dtype}), device, threads, image (url),
// tokens, repeats} resolves to {load_ms, warmup_ms, caption_ms: [...], first_token_ms: [...], threads}.
import { env, pipeline } from '/vendor/transformers.min.js';
import { wasmPathsFor } from './wasm-build.js';
import { decodeForModel, reductionSizeOf } from './decode.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/models/';
env.useBrowserCache = false; // load time is the files' own, every run

window.bench = async (request) => {
  env.backends.onnx.wasm.numThreads = request.threads; // before the first session: it applies to all of them
  env.backends.onnx.wasm.wasmPaths = wasmPathsFor(request.device); // the build the demo loads for this device
  const t0 = performance.now();
  const captioner = await pipeline('image-to-text', request.model, { dtype: request.dtype, device: request.device });
  const loadMs = performance.now() - t0;
  const blob = await (await fetch(request.image)).blob();
  const reduceFor = await reductionSizeOf(request.model);
  const time = async (tokens) => {
    const marks = []; // generate puts the prompt first, then each generated token
    const streamer = { put: () => marks.push(performance.now()), end: () => {} };
    const start = performance.now(); // decoding counts, as in the demo: a large photo costs its decode
    const image = await decodeForModel(blob, reduceFor);
    await captioner(image, { max_new_tokens: tokens, min_new_tokens: tokens, streamer });
    return { total: performance.now() - start, first: marks[1] - start };
  };
  const warmupMs = (await time(request.tokens)).total;
  const caption = [], first = [];
  for (let i = 0; i < request.repeats; i++) {
    const run = await time(request.tokens);
    caption.push(run.total);
    first.push(run.first);
  }
  await captioner.dispose();
  return { load_ms: loadMs, warmup_ms: warmupMs, caption_ms: caption, first_token_ms: first, threads: request.threads };
};
window.benchReady = true;
