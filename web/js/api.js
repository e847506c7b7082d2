// REST calls to this origin (/v1/...). Public routes take no credentials; account routes
// take the API key the user typed, sent as the X-API-Key header (never in a URL).

export class ApiError extends Error {
  constructor(status, body) {
    const code = body && typeof body.error === "string" ? body.error : `HTTP ${status}`;
    const text = body && typeof body.message === "string" ? body.message : "request failed";
    super(`${code}: ${text}`);
    this.status = status;
    this.code = code;
    this.detail = text;
  }
}

async function call(method, path, { key = null, body = undefined } = {}) {
  const headers = { Accept: "application/json" };
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "omit",
    cache: "no-store",
  });
  let data = null;
  const type = res.headers.get("content-type") || "";
  if (type.includes("application/json")) data = await res.json();
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export const get = (path, key = null) => call("GET", path, { key });
export const post = (path, body, key) => call("POST", path, { key, body });
export const del = (path, key) => call("DELETE", path, { key });

/** The set of "METHOD /path" the service documents (/openapi.json), so optional routes
 *  (funding, events) are called only where they exist. Empty when it cannot be read. */
export async function routes() {
  try {
    const doc = await get("/openapi.json");
    const out = new Set();
    for (const [path, item] of Object.entries(doc.paths || {})) {
      for (const method of Object.keys(item)) out.add(`${method.toUpperCase()} ${path}`);
    }
    return out;
  } catch {
    return new Set();
  }
}
