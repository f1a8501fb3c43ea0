// Token ids from stock transformers.js for the parity check, per image, two ways:
//   end_to_end: transformers.js decodes the image file itself (sharp), then generates;
//   model:      the pixels Python decoded (distilvit.pixels) go straight to generate.
// Either way the graph composites, resizes and normalises the pixels (the export's processor hands them over).
// Input (stdin, JSON): {model_dir, layout, dtype, images: [paths],
//                       pixel_values: [{dims: [1, C, H, W], uint8_base64}] (one per image) | null, max_new_tokens,
//                       forced: [[ids]] (one per image) | null, watch: [ids], top}
// Output (stdout, JSON): {load_ms, results: [{image, end_to_end: [ids] | null, model: [ids] | null, ms,
//                          pixels: {dims, uint8_base64} | null, error: string | null,
//                          logits: [{watch, top_ids, top_values}] (per step, teacher forced) | null}]}
// With `forced`, each image is also run with the pixels Python decoded and PyTorch's tokens forced at every step
// (forced_logits.mjs): the decoder's logits at PyTorch's positions.
import { readFileSync } from 'node:fs';
import { AutoProcessor, AutoModelForVision2Seq, AutoModelForImageTextToText, RawImage, Tensor } from '@huggingface/transformers';
import { useLocalModel } from './offline.mjs';
import { forcedLogits } from './forced_logits.mjs';

const request = JSON.parse(readFileSync(0, 'utf8'));
const modelId = useLocalModel(request.model_dir);
const options = { dtype: request.dtype, device: 'cpu' };
const pipelineLayout = request.layout === 'pipeline';

const started = performance.now();
const processor = await AutoProcessor.from_pretrained(modelId);
const model = pipelineLayout
  ? await AutoModelForVision2Seq.from_pretrained(modelId, options)
  : await AutoModelForImageTextToText.from_pretrained(modelId, options);
const loadMs = performance.now() - started;
const eos = model.generation_config.eos_token_id;
const prompt = pipelineLayout ? null : '<image>' + processor.tokenizer.bos_token;

function pixelSlice(i) {
  const { dims, uint8_base64 } = request.pixel_values[i];
  return new Tensor('float32', Float32Array.from(Buffer.from(uint8_base64, 'base64')), dims);
}

async function generate(inputs) {
  const output = await model.generate({ ...inputs, max_new_tokens: request.max_new_tokens, do_sample: false });
  const skip = pipelineLayout ? 1 : inputs.input_ids.dims[1];  // decoder start token / the prompt
  const ids = Array.from(output.tolist()[0].slice(skip), Number);
  const end = ids.indexOf(Number(eos));
  return end >= 0 ? ids.slice(0, end) : ids;
}

// A stand-in image for the model path of the llava layout: its processor only needs one for the prompt, whose
// image-token count does not depend on the image size (export/layout.py), and the given pixels replace its own.
const standIn = new RawImage(new Uint8ClampedArray(4), 1, 1, 4);

async function inputsFor(image, pixelValues) {
  if (pipelineLayout) {
    return { pixel_values: pixelValues ?? (await processor(image)).pixel_values };
  }
  const inputs = await processor(image ?? standIn, prompt, { add_special_tokens: false });
  return pixelValues ? { ...inputs, pixel_values: pixelValues } : inputs;
}

// The decoded pixels transformers.js hands the graph (integers 0..255), for the pixel comparison in Python.
const pixelsOf = (tensor) => ({ dims: tensor.dims, uint8_base64: Buffer.from(Uint8Array.from(tensor.data)).toString('base64') });

const results = [];
for (let i = 0; i < request.images.length; i++) {
  let endToEnd = null, pixels = null, error = null, ms = null;
  try {
    const inputs = await inputsFor(await RawImage.read(request.images[i]), null);
    pixels = pixelsOf(inputs.pixel_values);
    const t0 = performance.now();
    endToEnd = await generate(inputs);
    ms = performance.now() - t0;
  } catch (err) {
    error = String(err?.message ?? err); // e.g. an image this runtime cannot decode: reported, not fatal
  }
  const modelIds = request.pixel_values ? await generate(await inputsFor(null, pixelSlice(i))) : null;
  const logits = request.forced && request.pixel_values
    ? await forcedLogits(model, await inputsFor(null, pixelSlice(i)), request, i) : null;
  results.push({ image: request.images[i], end_to_end: endToEnd, model: modelIds, ms, pixels, error, logits });
}
process.stdout.write(JSON.stringify({ load_ms: loadMs, results }));
