// Runs the model off the main thread so the page stays responsive. Messages are handled one at a time, in order
// (a load never overlaps a caption), and every answer carries the id of the message it answers.
// Messages in:  {type: 'load', id, model, layout, dtype, device, reduceSize} | {type: 'caption', id, image: Blob}
// Images are decoded by decode.js (the browser's decoder, a pixel limit, the model's block reduction).
// Messages out: {type: 'progress', id, file, progress} | {type: 'ready', id, ms, device, threads, isolated}
//               | {type: 'caption', id, text, ms (decode + caption), width, height (what the model got)}
//               | {type: 'error', id, message}
// All files come from the page's own server, beside the page: transformers.js and the wasm from vendor/, models
// from models/ (relative paths, so the page works at / and under a subpath of a static host).
// `model` is the served path `NAME/vVERSION`: a new export of the same name has a new version, so the browser
// cache (Cache Storage, which transformers.js keys by URL) never serves a stale one, and a reload of the same
// export requests no model file at all.
import { env, pipeline, AutoProcessor, AutoModelForImageTextToText } from './vendor/transformers.min.js';
import { wasmPathsFor } from './wasm-build.js';
import { decodeForModel, ImageTooLarge } from './decode.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = new URL('./models/', import.meta.url).pathname; // beside the page: a site under a subpath works
env.useBrowserCache = true;
// every core: onnxruntime-web's default is half of them (one thread on a 2-core machine: 1.3-1.9x slower, docs/browser.md).
// Threads need SharedArrayBuffer, which only a cross-origin isolated page has (COOP + COEP headers); elsewhere
// WebAssembly runs on one thread, and the page says so (the 'ready' message carries what is used).
const threads = self.crossOriginIsolated ? (self.navigator.hardwareConcurrency || 1) : 1;
env.backends.onnx.wasm.numThreads = threads;

let run = null; // async (RawImage) => caption text
let reduceFor = 0; // the loaded model's input size, for decode.js' block reduction (0: none)
let dispose = null; // frees the loaded model's sessions
let built = null; // the device whose onnxruntime-web build this worker loaded (app.js starts a worker per device)

async function load({ id, model, layout, dtype, device, reduceSize }) {
  if (built === null) {
    env.backends.onnx.wasm.wasmPaths = wasmPathsFor(device); // read once, at the first session
    built = device;
  } else if (built !== device) {
    throw new Error(`this worker runs ${built}; ${device} needs a new worker`);
  }
  if (dispose) {  // the replaced model's sessions (and their wasm / GPU memory) go first
    const free = dispose;
    run = dispose = null;
    await free();
  }
  const progress_callback = (p) => {
    if (p.status === 'progress') postMessage({ type: 'progress', id, file: p.file, progress: p.progress });
  };
  const options = { dtype, device, progress_callback };
  const t0 = performance.now();
  reduceFor = reduceSize ?? 0; // from /models/index.json: a reload requests no model file at all
  if (layout === 'llava') {
    const processor = await AutoProcessor.from_pretrained(model, { progress_callback });
    const llava = await AutoModelForImageTextToText.from_pretrained(model, options);
    const prompt = '<image>' + processor.tokenizer.bos_token;
    run = async (image) => {
      const inputs = await processor(image, prompt, { add_special_tokens: false });
      const out = await llava.generate({ ...inputs, do_sample: false });
      const [text] = processor.batch_decode(out.slice(null, [inputs.input_ids.dims[1], null]), { skip_special_tokens: true });
      return text.trim();
    };
    dispose = () => llava.dispose();
  } else {
    const captioner = await pipeline('image-to-text', model, options);
    run = async (image) => (await captioner(image))[0].generated_text.trim();
    dispose = () => captioner.dispose();
  }
  postMessage({ type: 'ready', id, ms: performance.now() - t0, device, threads, isolated: self.crossOriginIsolated });
}

async function caption({ id, image: blob }) {
  if (!run) throw new Error('No model is loaded.');
  const t0 = performance.now(); // decoding counts: a 12 MP photo costs its decode, and no more than that
  let image;
  try {
    image = await decodeForModel(blob, reduceFor);
  } catch (err) {
    if (err instanceof ImageTooLarge) throw err;
    throw new Error('That file is not an image this browser can decode.');
  }
  const text = await run(image);
  postMessage({ type: 'caption', id, text, ms: performance.now() - t0, width: image.width, height: image.height });
}

async function handle(data) {
  try {
    if (data.type === 'load') await load(data);
    else if (data.type === 'caption') await caption(data);
  } catch (err) {
    postMessage({ type: 'error', id: data.id, kind: data.type, message: String(err?.message ?? err) });
  }
}

let queue = Promise.resolve();
self.onmessage = ({ data }) => { queue = queue.then(() => handle(data)); };
