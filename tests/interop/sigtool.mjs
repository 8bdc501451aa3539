// Signs and verifies requests with the official @interledger/http-signature-utils, so the
// Python tests can hold opapprove's signatures against the code real wallets (Rafiki) run.
//
// stdin:  one op object, or a JSON array of them (batch: one node start for many cases)
//   {"op":"sign", method, url, headers, body?, privateKeyPem, keyId, created?}
//       -> {"headers": <createHeaders output>}
//   {"op":"verify", method, url, headers, body?, jwk, reserialize?}
//       -> {"headersValid": validateSignatureHeaders(...), "valid": validateSignature(...)}
//   {"op":"stringify", text} -> {"text": JSON.stringify(JSON.parse(text))}
// stdout: the result object, or an array of results in input order. A failing op gives
// {"error": "..."} in its place rather than aborting the batch.
import { createPrivateKey } from 'node:crypto'
import {
  createHeaders,
  validateSignature,
  validateSignatureHeaders
} from '@interledger/http-signature-utils'

const RealDate = Date

// createHeaders stamps `created` from `new Date()`; freezing the clock for one op is the only
// way to compare its output byte for byte with ours.
async function withFrozenClock(created, fn) {
  if (created === undefined || created === null) return fn()
  const fixedMs = created * 1000
  class FrozenDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(fixedMs)
      else super(...args)
    }
    static now() {
      return fixedMs
    }
  }
  globalThis.Date = FrozenDate
  try {
    return await fn()
  } finally {
    globalThis.Date = RealDate
  }
}

function lowercaseHeaders(headers) {
  // Koa (and so Rafiki) hands the verifier lowercase header names.
  const out = {}
  for (const [name, value] of Object.entries(headers || {})) out[name.toLowerCase()] = value
  return out
}

async function sign(op) {
  const request = {
    method: op.method,
    url: op.url,
    headers: { ...(op.headers || {}) },
    ...(op.body ? { body: op.body } : {})
  }
  const privateKey = createPrivateKey(op.privateKeyPem)
  const headers = await withFrozenClock(op.created, () =>
    createHeaders({ request, privateKey, keyId: op.keyId })
  )
  return { headers }
}

async function verify(op) {
  let body = op.body || undefined
  // Rafiki passes the verifier JSON.stringify(ctx.request.body), not the raw bytes.
  if (body && op.reserialize !== false) body = JSON.stringify(JSON.parse(body))
  const request = { method: op.method, url: op.url, headers: lowercaseHeaders(op.headers), body }
  const headersValid = validateSignatureHeaders(request)
  const valid = await validateSignature(op.jwk, request)
  return { headersValid, valid }
}

async function run(op) {
  try {
    switch (op.op) {
      case 'sign':
        return await sign(op)
      case 'verify':
        return await verify(op)
      case 'stringify':
        return { text: JSON.stringify(JSON.parse(op.text)) }
      default:
        return { error: `unknown op ${JSON.stringify(op.op)}` }
    }
  } catch (err) {
    return { error: String(err && err.message ? err.message : err) }
  }
}

async function main() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  const output = []
  // Sequential on purpose: the frozen clock is global.
  for (const op of Array.isArray(input) ? input : [input]) output.push(await run(op))
  process.stdout.write(JSON.stringify(Array.isArray(input) ? output : output[0]))
}

main().catch((err) => {
  process.stderr.write(`sigtool: ${err && err.stack ? err.stack : err}\n`)
  process.exit(1)
})
