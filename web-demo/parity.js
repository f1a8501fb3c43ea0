// Token ids from stock transformers.js in this browser, for `distilvit-web verify parity --runtime chromium-*`
// (distilvit/runtimes/browser.py drives it with Playwright). The same two ways as distilvit/runtimes/js/parity.mjs:
//   end_to_end: the browser decodes the image file itself, as the demo does (decode.js), then generates;
//   model:      the pixels Python decoded (distilvit.pixels) go straight to generate.
// Either way the graph composites, resizes and normalises them (the export's processor hands them over untouched).
// window.parity(request) with request = {model, layout, dtype, device: 'wasm'|'webgpu', images: [urls],
//   pixel_values: [{dims: [1, C, H, W], uint8_base64}] (one per image) | null, max_new_tokens,
//   forced: [[ids]] | null, watch: [ids], top} resolves to {load_ms, device, results: [{image, end_to_end, model, ms,
//   pixels: {dims, uint8_base64} | null, error, logits: [{watch, top_ids, top_values}] | null}]}: `logits` are the
//   decoder's at PyTorch's positions, its tokens forced at every step (forced_logits.mjs, served beside this page
//   by distilvit/runtimes/browser.py). It knows nothing about PyTorch.
import { env, AutoProcessor, AutoModelForVision2Seq, AutoModelForImageTextToText, RawImage, Tensor } from '/vendor/transformers.min.js';
import { wasmPathsFor } from './wasm-build.js';
import { decodeForModel, reductionSizeOf } from './decode.js';
import { forcedLogits } from '/forced_logits.mjs';

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/models/';
env.useBrowserCache = false; // every check loads the files as they are now
env.backends.onnx.wasm.numThreads = self.navigator.hardwareConcurrency || 1;

window.parity = async (request) => {
  env.backends.onnx.wasm.wasmPaths = wasmPathsFor(request.device); // the build the demo loads for this device
  const pipelineLayout = request.layout === 'pipeline';
  const options = { dtype: request.dtype, device: request.device };
  const started = performance.now();
  const processor = await AutoProcessor.from_pretrained(request.model);
  const model = pipelineLayout
    ? await AutoModelForVision2Seq.from_pretrained(request.model, options)
    : await AutoModelForImageTextToText.from_pretrained(request.model, options);
  const loadMs = performance.now() - started;
  const reduceFor = await reductionSizeOf(request.model);
  const eos = Number(model.generation_config.eos_token_id);
  const prompt = pipelineLayout ? null : '<image>' + processor.tokenizer.bos_token;

  const pixelSlice = (i) => {
    const { dims, uint8_base64 } = request.pixel_values[i];
    const bytes = Uint8Array.from(atob(uint8_base64), (c) => c.charCodeAt(0));
    return new Tensor('float32', Float32Array.from(bytes), dims);
  };
  const generate = async (inputs) => {
    const output = await model.generate({ ...inputs, max_new_tokens: request.max_new_tokens, do_sample: false });
    const skip = pipelineLayout ? 1 : inputs.input_ids.dims[1]; // decoder start token / the prompt
    const ids = Array.from(output.tolist()[0].slice(skip), Number);
    const end = ids.indexOf(eos);
    return end >= 0 ? ids.slice(0, end) : ids;
  };
  // The llava processor needs an image only for the prompt, whose image-token count does not depend on its size
  // (export/layout.py): a 1x1 stand-in serves the model path, and the given pixels replace its own.
  const standIn = new RawImage(new Uint8ClampedArray(4), 1, 1, 4);
  const inputsFor = async (image, pixelValues) => {
    if (pipelineLayout) return { pixel_values: pixelValues ?? (await processor(image)).pixel_values };
    const inputs = await processor(image ?? standIn, prompt, { add_special_tokens: false });
    return pixelValues ? { ...inputs, pixel_values: pixelValues } : inputs;
  };
  // The decoded pixels transformers.js hands the graph, for the pixel comparison in Python: 8-bit integers as
  // decoded, or float32 (decode.js' block means of a large photo).
  const base64 = (bytes) => {
    let text = '';
    for (let i = 0; i < bytes.length; i += 8192) text += String.fromCharCode(...bytes.subarray(i, i + 8192));
    return btoa(text);
  };
  const pixelsOf = (tensor) => (tensor.data.every((v) => Number.isInteger(v))
    ? { dims: tensor.dims, uint8_base64: base64(Uint8Array.from(tensor.data)) }
    : { dims: tensor.dims, float32_base64: base64(new Uint8Array(Float32Array.from(tensor.data).buffer)) });

  const results = [];
  for (let i = 0; i < request.images.length; i++) {
    let endToEnd = null, pixels = null, error = null, ms = null;
    try {
      // the demo's decoding (decode.js): the browser's decoder, then the block reduction of a large photo
      const inputs = await inputsFor(await decodeForModel(await (await fetch(request.images[i])).blob(), reduceFor), null);
      pixels = pixelsOf(inputs.pixel_values);
      const t0 = performance.now();
      endToEnd = await generate(inputs);
      ms = performance.now() - t0;
    } catch (err) {
      error = String(err?.message ?? err); // an image this browser cannot decode: reported, not fatal
    }
    const modelIds = request.pixel_values ? await generate(await inputsFor(null, pixelSlice(i))) : null;
    const logits = request.forced && request.pixel_values
      ? await forcedLogits(model, await inputsFor(null, pixelSlice(i)), request, i) : null;
    results.push({ image: request.images[i], end_to_end: endToEnd, model: modelIds, ms, pixels, error, logits });
  }
  await model.dispose();
  return { load_ms: loadMs, device: request.device, results };
};
window.parityReady = true;
