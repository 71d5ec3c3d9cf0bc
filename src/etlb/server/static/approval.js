// The etlb approval page: shows one approval request and signs the approver's answer in this browser.
//
// Keys are WebCrypto Ed25519 keys (RFC 8037). An imported PKCS #8 key is imported once as extractable
// to read its public member `x`, then again as non-extractable for signing. A key created here is
// non-extractable and kept in IndexedDB. No request this page sends carries a private key: it sends
// a compact JWS (RFC 7515) whose payload part is the service's own base64url of the RFC 8785 bytes.
"use strict";

const REQUEST_ID = decodeURIComponent(location.pathname.split("/").pop());
const API = `/v1/approvals/${encodeURIComponent(REQUEST_ID)}`;
const DATABASE = "etlb-approvals";
const KEY_STORE = "keys";
const ED25519 = { name: "Ed25519" };

const state = {
  request: null,
  clockOffset: 0, // the gate's time minus this browser's time, in milliseconds
  timer: null,
  key: null, // { privateKey, publicJwk, kid, source }
  acceptance: null, // the acceptance payload document fetched for the chosen bearer
};

function element(id) {
  return document.getElementById(id);
}

// Encoding

function base64url(bytes) {
  let binary = "";
  for (const byte of bytes) {
    binary += String.fromCharCode(byte);
  }
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

function base64urlDecode(text) {
  const padded = text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (character) => character.charCodeAt(0));
}

function utf8(text) {
  return new TextEncoder().encode(text);
}

// RFC 7638 thumbprint of an Ed25519 public key: SHA-256 over its required members in lexicographic order.
async function thumbprint(x) {
  const members = JSON.stringify({ crv: "Ed25519", kty: "OKP", x });
  return base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", utf8(members))));
}

// Keys

function pkcs8Der(text) {
  if (text.includes("BEGIN ENCRYPTED PRIVATE KEY")) {
    throw new Error(
      "This key file is encrypted with a passphrase, which this page cannot read. On your own machine, " +
        "write an unencrypted copy with: openssl pkey -in YOUR.key -out YOUR-unencrypted.key " +
        "(it asks for the passphrase), import that copy here, and delete it afterwards.",
    );
  }
  const match = text.match(/-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/);
  if (match === null) {
    throw new Error(
      "This is not an unencrypted PKCS #8 private key: expected the PEM block " +
        "-----BEGIN PRIVATE KEY----- that etlb keygen writes.",
    );
  }
  return Uint8Array.from(atob(match[1].replace(/\s+/g, "")), (character) => character.charCodeAt(0));
}

async function importPrivateKey(text) {
  const der = pkcs8Der(text);
  try {
    const extractable = await crypto.subtle.importKey("pkcs8", der, ED25519, true, ["sign"]);
    const { x } = await crypto.subtle.exportKey("jwk", extractable);
    const privateKey = await crypto.subtle.importKey("pkcs8", der, ED25519, false, ["sign"]);
    const publicJwk = { kty: "OKP", crv: "Ed25519", x };
    return { privateKey, publicJwk, kid: await thumbprint(x), source: "imported into this page only" };
  } catch (error) {
    throw new Error(`The key could not be imported as an Ed25519 key: ${error.message}. Create etlb keys with etlb keygen.`);
  } finally {
    der.fill(0);
  }
}

function openDatabase() {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(DATABASE, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(KEY_STORE, { keyPath: "kid" });
    opening.onsuccess = () => resolve(opening.result);
    opening.onerror = () => reject(opening.error);
  });
}

async function storeOperation(mode, operate) {
  const database = await openDatabase();
  try {
    return await new Promise((resolve, reject) => {
      const request = operate(database.transaction(KEY_STORE, mode).objectStore(KEY_STORE));
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  } finally {
    database.close();
  }
}

async function createKey() {
  const pair = await crypto.subtle.generateKey(ED25519, false, ["sign", "verify"]);
  const { x } = await crypto.subtle.exportKey("jwk", pair.publicKey);
  const publicJwk = { kty: "OKP", crv: "Ed25519", x };
  const record = { kid: await thumbprint(x), privateKey: pair.privateKey, publicJwk, created: new Date().toISOString() };
  await storeOperation("readwrite", (store) => store.put(record));
  return { ...record, source: "kept in this browser" };
}

async function listStoredKeys() {
  return storeOperation("readonly", (store) => store.getAll());
}

async function showStoredKeys() {
  const keys = await listStoredKeys();
  const select = element("stored-keys");
  select.replaceChildren();
  for (const key of keys) {
    const option = document.createElement("option");
    option.value = key.kid;
    option.textContent = `${key.kid} (created ${key.created})`;
    select.append(option);
  }
  element("stored").hidden = keys.length === 0;
  return keys;
}

function useKey(key) {
  state.key = key;
  element("key-status").textContent = `Key ${key.kid} loaded (${key.source}).`;
  updateButtons();
}

// Rendering

function formatRemaining(milliseconds) {
  const total = Math.max(0, Math.floor(milliseconds / 1000));
  const days = Math.floor(total / 86400);
  const clock = [Math.floor(total / 3600) % 24, Math.floor(total / 60) % 60, total % 60]
    .map((part) => String(part).padStart(2, "0"))
    .join(":");
  return days > 0 ? `${days} d ${clock}` : clock;
}

function listItems(list, texts) {
  list.replaceChildren(
    ...texts.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }),
  );
}

function outcomeText(request) {
  switch (request.status) {
    case "accepted":
      return `Accepted: the action is bound to ${request.bearer} (binding ${request.binding_id}). The agent may now run it once.`;
    case "declined":
      return `Declined by ${request.bearer}: the action is refused (refusal ${request.refusal_id}) and will not run.`;
    case "timed_out":
      return `Timed out: no approver answered before the deadline, so the action is refused (refusal ${request.refusal_id}) and will not run.`;
    default:
      return `Failed: ${request.detail}. The action is refused and will not run.`;
  }
}

function renderRequest(request) {
  state.request = request;
  state.clockOffset = Date.parse(request.now) - Date.now();

  element("action").textContent = JSON.stringify(request.action, null, 2);
  element("digest").textContent = request.action.digest;
  const reasons = request.reasons.map((reason) => `${reason.bearer}'s scope ${reason.scope_id}: ${reason.code}: ${reason.detail}`);
  listItems(element("reasons"), reasons.length > 0 ? reasons : ["No standing scope came close to covering it."]);
  element("order").textContent =
    request.order === "sequence"
      ? "Each approver in this order, in their own share of the time until the deadline:"
      : "Any one of:";
  listItems(element("approvers"), request.approvers);
  element("deadline").textContent = request.deadline;
  element("deadline").dateTime = request.deadline;
  element("request").hidden = false;

  if (request.status !== "pending") {
    closePage(request);
    return;
  }
  element("status").textContent = "Pending: waiting for an approver's answer. Nothing has run.";
  renderBearers(request.approvers);
  element("answer").hidden = false;
  startCountdown();
}

function renderBearers(approvers) {
  const select = element("bearer");
  if (select.options.length > 0) {
    return;
  }
  const placeholder = document.createElement("option");
  placeholder.value = "";
  placeholder.textContent = "choose your bearer id";
  select.append(placeholder);
  for (const approver of approvers) {
    const option = document.createElement("option");
    option.value = approver;
    option.textContent = approver;
    select.append(option);
  }
}

// A closed request offers no answer: the controls are removed, and the outcome is shown.
function closePage(request) {
  clearInterval(state.timer);
  element("answer")?.remove();
  element("countdown").textContent =
    request.status === "timed_out" ? "none, the deadline has passed" : "none, the request is closed";
  element("status").textContent = `Status: ${request.status.replace("_", " ")}.`;
  const outcome = element("outcome");
  outcome.textContent = outcomeText(request);
  outcome.hidden = false;
}

function startCountdown() {
  clearInterval(state.timer);
  const tick = () => {
    const remaining = Date.parse(state.request.deadline) - (Date.now() + state.clockOffset);
    element("countdown").textContent = formatRemaining(remaining);
    if (remaining <= 0) {
      clearInterval(state.timer);
      element("status").textContent = "The deadline has passed. Checking the request's status.";
      setButtonsDisabled(true);
      // The gate closes an expired request when it is read. A second's wait lets its clock pass the deadline too.
      setTimeout(loadRequest, 1000);
    }
  };
  tick();
  state.timer = setInterval(tick, 250);
}

function showError(id, text) {
  const paragraph = element(id);
  if (paragraph === null) {
    return;
  }
  paragraph.textContent = text;
  paragraph.hidden = text === "";
}

function setButtonsDisabled(disabled) {
  for (const id of ["accept", "decline"]) {
    const button = element(id);
    if (button !== null) {
      button.disabled = disabled;
    }
  }
}

function updateButtons() {
  const ready = state.key !== null && element("bearer")?.value;
  const accept = element("accept");
  if (accept !== null) {
    accept.disabled = !(ready && state.acceptance !== null);
    element("decline").disabled = !ready;
  }
}

// Service calls

async function fetchJson(url, options = {}) {
  const response = await fetch(url, { credentials: "omit", cache: "no-store", ...options });
  let body = null;
  try {
    body = await response.json();
  } catch {
    throw new Error(`The service responded HTTP ${response.status} without a JSON document.`);
  }
  if (!response.ok) {
    const hint = body.hint ? ` (${body.hint})` : "";
    throw new Error(`${body.detail || body.title || `HTTP ${response.status}`}${hint}`);
  }
  return body;
}

async function loadRequest() {
  try {
    renderRequest(await fetchJson(API));
  } catch (error) {
    showError("load-error", `The approval request could not be loaded: ${error.message}`);
  }
}

// Fetches what the bearer signs, and checks that its bytes name this request and action.
async function fetchPayload(bearer, decline, reason) {
  const query = new URLSearchParams({ bearer, decline: String(decline), reason });
  const template = await fetchJson(`${API}/payload?${query}`);
  const signed = JSON.parse(new TextDecoder().decode(base64urlDecode(template.signing_input_payload)));
  const requestId = decline ? signed.request_id : signed.approval;
  if (requestId !== REQUEST_ID || signed.action_digest !== state.request.action.digest || signed.bearer !== bearer) {
    throw new Error("The service returned a payload for another request, action or bearer, so nothing was signed.");
  }
  return { ...template, signed };
}

async function chooseBearer() {
  state.acceptance = null;
  showError("error", "");
  updateButtons();
  const bearer = element("bearer").value;
  if (!bearer) {
    element("terms").textContent = "Choose your bearer id to see the terms.";
    return;
  }
  try {
    state.acceptance = await fetchPayload(bearer, false, "");
    // The terms shown are read from the bytes that get signed, not from a separate field.
    element("terms").textContent = state.acceptance.signed.terms;
  } catch (error) {
    element("terms").textContent = "";
    showError("error", error.message);
  }
  updateButtons();
}

async function signAndSend(template) {
  const header = { alg: "EdDSA", kid: state.key.kid, typ: template.typ };
  const signingInput = `${base64url(utf8(JSON.stringify(header)))}.${template.signing_input_payload}`;
  const signature = await crypto.subtle.sign(ED25519, state.key.privateKey, utf8(signingInput));
  const jws = `${signingInput}.${base64url(new Uint8Array(signature))}`;
  return fetchJson(`${API}/answer`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ jws }),
  });
}

async function answer(decline) {
  showError("error", "");
  setButtonsDisabled(true);
  try {
    const bearer = element("bearer").value;
    const template = decline ? await fetchPayload(bearer, true, element("decline-reason").value) : state.acceptance;
    renderRequest(await signAndSend(template));
  } catch (error) {
    showError("error", `The answer was not accepted: ${error.message}. The request is still pending.`);
    updateButtons();
  }
}

// Wiring

async function readKeyFile() {
  const file = element("key-file").files[0];
  if (file !== undefined) {
    await loadKey(() => file.text().then(importPrivateKey));
    element("key-file").value = "";
  }
}

async function loadKey(obtain) {
  showError("error", "");
  try {
    useKey(await obtain());
  } catch (error) {
    showError("error", error.message);
  }
}

function wire() {
  element("request-id").textContent = REQUEST_ID;
  element("key-file").addEventListener("change", readKeyFile);
  element("import-key").addEventListener("click", async () => {
    const textarea = element("key-pem");
    const text = textarea.value;
    // The pasted key is cleared from the form at once, so only the non-extractable CryptoKey remains.
    textarea.value = "";
    await loadKey(() => importPrivateKey(text));
  });
  element("use-stored").addEventListener("click", () =>
    loadKey(async () => {
      const kid = element("stored-keys").value;
      const key = (await listStoredKeys()).find((stored) => stored.kid === kid);
      if (key === undefined) {
        throw new Error(`Key ${kid} is no longer kept in this browser.`);
      }
      return { ...key, source: "kept in this browser" };
    }),
  );
  element("create-key").addEventListener("click", () =>
    loadKey(async () => {
      const key = await createKey();
      element("public-jwk").textContent = JSON.stringify(key.publicJwk, null, 2);
      element("new-key").hidden = false;
      await showStoredKeys();
      return key;
    }),
  );
  element("bearer").addEventListener("change", chooseBearer);
  element("accept").addEventListener("click", () => answer(false));
  element("decline").addEventListener("click", () => answer(true));
}

document.addEventListener("DOMContentLoaded", async () => {
  wire();
  if (!window.isSecureContext || crypto.subtle === undefined) {
    showError(
      "load-error",
      "This page can sign only in a secure context: open it over HTTPS, or at 127.0.0.1 or localhost.",
    );
  } else {
    await showStoredKeys().catch((error) => showError("error", `Keys kept in this browser cannot be read: ${error.message}`));
  }
  await loadRequest();
});
