// Token ids from stock transformers.js in this browser, for `distilvit-web verify parity --runtime chromium-*`
// (distilvit/browser_runtime.py drives it with Playwright). The same two ways as distilvit/js/parity.mjs:
//   end_to_end: the browser decodes and preprocesses the image file itself, then generates;
//   model:      the given pixel_values (preprocessed in Python, as PyTorch saw them) go straight to generate.
// window.parity(request) with request = {model, layout, dtype, device: 'wasm'|'webgpu', images: [urls],
//   pixel_values: {dims, data} | null, max_new_tokens} resolves to {load_ms, device, results: [{image, end_to_end,
//   model, ms}]}. It knows nothing about PyTorch.
import { env, AutoProcessor, AutoModelForVision2Seq, AutoModelForImageTextToText, RawImage, Tensor } from '/vendor/transformers.min.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/models/';
env.useBrowserCache = false; // every check loads the files as they are now
env.backends.onnx.wasm.wasmPaths = new URL('/vendor/', self.location.origin).href;
env.backends.onnx.wasm.numThreads = self.navigator.hardwareConcurrency || 1;

window.parity = async (request) => {
  const pipelineLayout = request.layout === 'pipeline';
  const options = { dtype: request.dtype, device: request.device };
  const started = performance.now();
  const processor = await AutoProcessor.from_pretrained(request.model);
  const model = pipelineLayout
    ? await AutoModelForVision2Seq.from_pretrained(request.model, options)
    : await AutoModelForImageTextToText.from_pretrained(request.model, options);
  const loadMs = performance.now() - started;
  const eos = Number(model.generation_config.eos_token_id);
  const prompt = pipelineLayout ? null : '<image>' + processor.tokenizer.bos_token;

  const pixelSlice = (i) => {
    const { dims, data } = request.pixel_values;
    const size = dims[1] * dims[2] * dims[3];
    return new Tensor('float32', Float32Array.from(data.slice(i * size, (i + 1) * size)), [1, dims[1], dims[2], dims[3]]);
  };
  const generate = async (inputs) => {
    const output = await model.generate({ ...inputs, max_new_tokens: request.max_new_tokens, do_sample: false });
    const skip = pipelineLayout ? 1 : inputs.input_ids.dims[1]; // decoder start token / the prompt
    const ids = Array.from(output.tolist()[0].slice(skip), Number);
    const end = ids.indexOf(eos);
    return end >= 0 ? ids.slice(0, end) : ids;
  };
  const inputsFor = async (image, pixelValues) => {
    if (pipelineLayout) return { pixel_values: pixelValues ?? (await processor(image)).pixel_values };
    const inputs = await processor(image, prompt, { add_special_tokens: false });
    return pixelValues ? { ...inputs, pixel_values: pixelValues } : inputs;
  };

  const results = [];
  for (let i = 0; i < request.images.length; i++) {
    const image = await RawImage.fromURL(request.images[i]);
    const t0 = performance.now();
    const endToEnd = await generate(await inputsFor(image, null));
    const ms = performance.now() - t0;
    const modelIds = request.pixel_values ? await generate(await inputsFor(image, pixelSlice(i))) : null;
    results.push({ image: request.images[i], end_to_end: endToEnd, model: modelIds, ms });
  }
  await model.dispose();
  return { load_ms: loadMs, device: request.device, results };
};
window.parityReady = true;
