// Token ids from stock transformers.js for the parity check, per image, two ways:
//   end_to_end: transformers.js preprocesses the image file itself (its own resize), then generates;
//   model:      the given pixel_values (preprocessed in Python, as PyTorch saw them) go straight to generate.
// Input (stdin, JSON): {model_dir, layout, dtype, images: [paths], pixel_values: {dims, data: [floats]} | null,
//                       max_new_tokens}
// Output (stdout, JSON): {load_ms, results: [{image, end_to_end: [ids], model: [ids] | null, ms}]}
import { readFileSync } from 'node:fs';
import { AutoProcessor, AutoModelForVision2Seq, AutoModelForImageTextToText, RawImage, Tensor } from '@huggingface/transformers';
import { useLocalModel } from './offline.mjs';

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
  const { dims, data } = request.pixel_values;
  const size = dims[1] * dims[2] * dims[3];
  return new Tensor('float32', Float32Array.from(data.slice(i * size, (i + 1) * size)), [1, dims[1], dims[2], dims[3]]);
}

async function generate(inputs) {
  const output = await model.generate({ ...inputs, max_new_tokens: request.max_new_tokens, do_sample: false });
  const skip = pipelineLayout ? 1 : inputs.input_ids.dims[1];  // decoder start token / the prompt
  const ids = Array.from(output.tolist()[0].slice(skip), Number);
  const end = ids.indexOf(Number(eos));
  return end >= 0 ? ids.slice(0, end) : ids;
}

async function inputsFor(image, pixelValues) {
  if (pipelineLayout) {
    return { pixel_values: pixelValues ?? (await processor(image)).pixel_values };
  }
  const inputs = await processor(image, prompt, { add_special_tokens: false });
  return pixelValues ? { ...inputs, pixel_values: pixelValues } : inputs;
}

const results = [];
for (let i = 0; i < request.images.length; i++) {
  const image = await RawImage.read(request.images[i]);
  const t0 = performance.now();
  const endToEnd = await generate(await inputsFor(image, null));
  const ms = performance.now() - t0;
  const modelIds = request.pixel_values ? await generate(await inputsFor(image, pixelSlice(i))) : null;
  results.push({ image: request.images[i], end_to_end: endToEnd, model: modelIds, ms });
}
process.stdout.write(JSON.stringify({ load_ms: loadMs, results }));
