// Uppy's @uppy/aws-s3 plugin (v5) uploading through Darkroom's grant routes.
// The server picks every key and records every upload; the browser only sends bytes.
//
//   import Uppy from "@uppy/core";
//   import AwsS3 from "@uppy/aws-s3";
//   import { useDarkroom } from "./darkroom-uppy.js";
//   const uppy = new Uppy();
//   useDarkroom(uppy, AwsS3, { baseUrl: "https://photos.example.com", getToken });
//
// Each file's Darkroom photo id is in its meta as `photoId` once it has a grant.

const MiB = 1024 * 1024;

export function useDarkroom(uppy, AwsS3, options) {
  const {
    baseUrl,
    getToken, // () => the user's bearer token (or a promise of it)
    albumId = null,
    // Keep these as the gateway's DARKROOM_MULTIPART_THRESHOLD and part size: a file
    // over the threshold always gets a multipart grant.
    multipartThreshold = 16 * MiB,
    partSize = 8 * MiB,
  } = options;

  async function call(method, path, body) {
    const headers = { Authorization: `Bearer ${await getToken()}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(baseUrl + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!resp.ok) {
      const problem = await resp.json().catch(() => ({}));
      throw new Error(`${method} ${path}: ${resp.status} ${problem.code ?? ""} ${problem.detail ?? ""}`);
    }
    return resp.status === 204 ? null : resp.json();
  }

  async function grant(file, extra) {
    const body = { filename: file.name, content_type: file.type, size: file.size, ...extra };
    if (albumId) body.album_id = albumId;
    const answer = await call("POST", "/v1/uploads", body);
    uppy.setFileMeta(file.id, { photoId: answer.photo_id });
    return answer;
  }

  uppy.use(AwsS3, {
    shouldUseMultipart: (file) => file.size > multipartThreshold,
    getChunkSize: () => partSize,

    async getUploadParameters(file) {
      const { upload } = await grant(file, { method: "PUT" });
      return { method: "PUT", url: upload.url, headers: sendable(upload.headers) };
    },

    async createMultipartUpload(file) {
      const { photo_id: photoId, upload } = await grant(file, { multipart: true });
      if (upload.part_size !== partSize) {
        throw new Error(`the gateway cuts parts of ${upload.part_size} bytes, not ${partSize}`);
      }
      return { uploadId: upload.upload_id, key: photoId };
    },

    async signPart(file, { key, partNumber }) {
      const { parts } = await call("POST", `/v1/uploads/${key}/parts`, { part_numbers: [partNumber] });
      return { method: "PUT", url: parts[0].url, headers: sendable(parts[0].headers) };
    },

    async listParts(file, { key }) {
      const { parts } = await call("GET", `/v1/uploads/${key}/parts`);
      return parts.map((p) => ({ PartNumber: p.part_number, ETag: p.etag, Size: p.size }));
    },

    async completeMultipartUpload(file, { key, parts }) {
      const body = { parts: parts.map((p) => ({ part_number: p.PartNumber, etag: p.ETag })) };
      await call("POST", `/v1/uploads/${key}/complete`, body);
      return {};
    },

    async abortMultipartUpload(file, { key }) {
      await call("DELETE", `/v1/uploads/${key}`);
    },
  });

  // A single upload: the completion hint starts verification without waiting for
  // storage's notification (multipart uploads got theirs from completeMultipartUpload).
  uppy.on("upload-success", (file) => {
    if (file.size <= multipartThreshold) {
      call("POST", `/v1/uploads/${file.meta.photoId}/complete`).catch(() => {});
    }
  });
}

// Browsers refuse to set Content-Length: they send the body's own length, the one signed.
function sendable(headers) {
  return Object.fromEntries(Object.entries(headers).filter(([name]) => name.toLowerCase() !== "content-length"));
}
