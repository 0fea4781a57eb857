// The app page of the Uppy test: the real @uppy/core and @uppy/aws-s3, with the adapter
// docs/clients.md quotes, bundled by esbuild.
import Uppy from "@uppy/core";
import AwsS3 from "@uppy/aws-s3";
import { useDarkroom } from "../../docs/examples/darkroom-uppy.js";

// Uploads the named files (fetched from this app's origin); resolves with each file's
// name, Darkroom photo id and Uppy's outcome.
window.uploadWithUppy = async ({ baseUrl, token, files }) => {
  const uppy = new Uppy({ autoProceed: false });
  useDarkroom(uppy, AwsS3, { baseUrl, getToken: () => token });
  for (const { name, type } of files) {
    const data = await (await fetch(`/files/${name}`)).blob();
    uppy.addFile({ name, type, data });
  }
  const result = await uppy.upload();
  const outcome = (file, ok) => ({ name: file.name, size: file.size, photoId: file.meta.photoId, ok, error: String(file.error ?? "") });
  return [...result.successful.map((f) => outcome(f, true)), ...result.failed.map((f) => outcome(f, false))];
};
