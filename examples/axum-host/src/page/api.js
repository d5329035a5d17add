// The host's HTTP API and what the page remembers in localStorage.

export const stored = (name, fallback) => localStorage.getItem(`lobu.${name}`) ?? fallback;
export const store = (name, value) => localStorage.setItem(`lobu.${name}`, value);
// randomUUID needs a secure context (https or localhost); plain http on a LAN address has none.
export const randomId = () => crypto.randomUUID?.() ?? `${Date.now()}-${Math.random().toString(36).slice(2)}`;
export const newConversationId = () => `web:${randomId().replace(/-/g, "").slice(0, 10)}`;

/** A JSON request with the key in the API key field as a bearer key; errors say what failed. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = document.getElementById("key").value;
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new Error(`cannot reach the server (${e.message})`);
  }
  const json = await response.json().catch(() => ({}));
  if (!response.ok) {
    const error = new Error(`${response.status} ${response.statusText}: ${json.error ?? "no details"}`);
    error.status = response.status;
    throw error;
  }
  return json;
}

// ---- Runs in flight, remembered across reloads ---------------------------------------------

// Unfinished runs live in localStorage, so a reload reattaches to their event streams (which
// replay from the start) instead of losing them.
export const pendingRuns = () => JSON.parse(stored("runs", "[]"));
const savePending = (runs) => store("runs", JSON.stringify(runs));
export const remember = (run) => savePending([...pendingRuns(), run]);
export const forget = (id) => savePending(pendingRuns().filter((r) => r.run !== id));

export const TERMINAL = ["completed", "failed", "timeout", "cancelled"];
