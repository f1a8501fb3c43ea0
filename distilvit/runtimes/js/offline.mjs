// Point transformers.js at a local export folder, with the Hugging Face Hub switched off.
import path from 'node:path';
import { env } from '@huggingface/transformers';

// Returns the model id to pass to from_pretrained / pipeline for `modelDir`.
export function useLocalModel(modelDir) {
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = path.dirname(path.resolve(modelDir)) + path.sep;
  return path.basename(path.resolve(modelDir));
}
