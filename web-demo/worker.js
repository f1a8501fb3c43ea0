// Runs the model off the main thread so the page stays responsive.
// Messages in:  {type: 'load', id, model, layout, dtype, device} | {type: 'caption', image: Blob}
// Messages out: {type: 'progress', file, progress} | {type: 'ready', id, ms} | {type: 'caption', text, ms} | {type: 'error', message}
// All files come from the page's own server: transformers.js and the wasm from /vendor/, models from /models/.
import { env, pipeline, AutoProcessor, AutoModelForImageTextToText, RawImage } from '/vendor/transformers.min.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/models/';
env.useBrowserCache = false;
env.backends.onnx.wasm.wasmPaths = new URL('/vendor/', self.location.origin).href;

let run = null; // async (RawImage) => caption text

async function load({ id, model, layout, dtype, device }) {
  const progress_callback = (p) => {
    if (p.status === 'progress') postMessage({ type: 'progress', file: p.file, progress: p.progress });
  };
  const options = { dtype, device, progress_callback };
  const t0 = performance.now();
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
  } else {
    const captioner = await pipeline('image-to-text', model, options);
    run = async (image) => (await captioner(image))[0].generated_text.trim();
  }
  postMessage({ type: 'ready', id, ms: performance.now() - t0 });
}

async function caption(blob) {
  let image;
  try {
    image = await RawImage.fromBlob(blob);
  } catch {
    throw new Error('That file is not an image this browser can decode.');
  }
  const t0 = performance.now();
  const text = await run(image);
  postMessage({ type: 'caption', text, ms: performance.now() - t0 });
}

self.onmessage = async ({ data }) => {
  try {
    if (data.type === 'load') await load(data);
    else if (data.type === 'caption') await caption(data.image);
  } catch (err) {
    postMessage({ type: 'error', message: String(err?.message ?? err) });
  }
};
