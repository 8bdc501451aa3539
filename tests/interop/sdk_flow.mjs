// Drives a live opapprove sandbox with the official @interledger/open-payments client, response
// validation on, through the whole seed flow: grants, incoming payment, quote, interactive
// grant approved headlessly, finish hash, continue, outgoing payment, token rotation, cancel.
//
// stdin: {sandboxUrl, clientWalletUrl, senderWalletUrl, receiverWalletUrl, keyId, privateKeyPem,
//         incomingValue, finishUri}
// stdout: {ok, steps: [{op, ok, ...}], validationErrors: [...], hash: {...}, balances: {...}, ...}
// It never throws past main: the first failing step is recorded and the run stops there.
import { createHash, createPrivateKey, generateKeyPairSync, randomUUID } from 'node:crypto'
import {
  OpenPaymentsClientError,
  createAuthenticatedClient,
  createUnauthenticatedClient,
  isFinalizedGrantWithAccessToken,
  isPendingGrant
} from '@interledger/open-payments'

const steps = []
const validationErrors = []
const out = { ok: false, steps, validationErrors }

class StepFailed extends Error {}

function describeError(err) {
  if (err instanceof OpenPaymentsClientError) {
    if (err.validationErrors?.length) validationErrors.push(...err.validationErrors)
    return {
      error: err.message,
      description: err.description,
      status: err.status,
      code: err.code,
      validationErrors: err.validationErrors
    }
  }
  return { error: String(err && err.stack ? err.stack : err) }
}

// Runs one SDK call; records it; stops the flow on failure.
async function step(op, fn, summarise = () => ({})) {
  try {
    const result = await fn()
    steps.push({ op, ok: true, ...summarise(result) })
    return result
  } catch (err) {
    steps.push({ op, ok: false, ...describeError(err) })
    throw new StepFailed(op)
  }
}

// Runs a call that must fail (an old token after rotation, a cancelled grant).
async function stepExpectingError(op, fn) {
  try {
    await fn()
  } catch (err) {
    const info = describeError(err)
    // A schema failure is never the refusal we are looking for.
    const ok = err instanceof OpenPaymentsClientError && !err.validationErrors?.length
    steps.push({ op, ok, refused: true, ...info })
    if (!ok) throw new StepFailed(op)
    return info
  }
  steps.push({ op, ok: false, error: 'the call succeeded but should have been refused' })
  throw new StepFailed(op)
}

function check(op, condition, detail) {
  steps.push({ op, ok: !!condition, ...(condition ? {} : { error: detail }) })
  if (!condition) throw new StepFailed(op)
}

async function adminJson(url, init) {
  const response = await fetch(url, {
    ...init,
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    redirect: 'manual'
  })
  const text = await response.text()
  let body
  try {
    body = JSON.parse(text)
  } catch {
    body = text
  }
  if (!response.ok) throw new Error(`${init?.method || 'GET'} ${url} -> ${response.status}: ${text}`)
  return body
}

// Rafiki's finish hash: sha-256 over the four values, standard base64 with padding.
function rafikiHash(clientNonce, asFinishNonce, interactRef, grantUrl) {
  return createHash('sha256')
    .update(`${clientNonce}\n${asFinishNonce}\n${interactRef}\n${grantUrl}`)
    .digest('base64')
}

function balanceOf(accounts, walletUrl) {
  const account = accounts.accounts.find((a) => a.url === walletUrl)
  if (!account) throw new Error(`no account ${walletUrl} in ${JSON.stringify(accounts)}`)
  return BigInt(account.balance)
}

async function flow(input) {
  const admin = `${input.sandboxUrl}/_admin`
  const client = await step('createAuthenticatedClient', () =>
    createAuthenticatedClient({
      walletAddressUrl: input.clientWalletUrl,
      keyId: input.keyId,
      privateKey: createPrivateKey(input.privateKeyPem),
      validateResponses: true
    })
  )
  const publicClient = await createUnauthenticatedClient({ validateResponses: true })

  // Wallet addresses and keys.
  const sender = await step('walletAddress.get (sender)', () =>
    client.walletAddress.get({ url: input.senderWalletUrl })
  )
  const receiver = await step('walletAddress.get (receiver)', () =>
    client.walletAddress.get({ url: input.receiverWalletUrl })
  )
  const clientKeys = await step('walletAddress.getKeys (client)', () =>
    client.walletAddress.getKeys({ url: input.clientWalletUrl })
  )
  check(
    'client jwks.json holds our key',
    clientKeys.keys.some((k) => k.kid === input.keyId),
    `kid ${input.keyId} not in ${JSON.stringify(clientKeys)}`
  )
  const accountsBefore = await adminJson(`${admin}/accounts`)

  // Incoming payment on the receiver, under a non-interactive grant.
  const incomingGrant = await step(
    'grant.request (incoming-payment)',
    () =>
      client.grant.request(
        { url: receiver.authServer },
        {
          access_token: {
            access: [{ type: 'incoming-payment', actions: ['create', 'read', 'list', 'complete'] }]
          }
        }
      ),
    (g) => ({ finalized: isFinalizedGrantWithAccessToken(g) })
  )
  check('incoming grant is finalized', isFinalizedGrantWithAccessToken(incomingGrant), 'it is pending')
  const incomingToken = incomingGrant.access_token.value
  const incomingPayment = await step(
    'incomingPayment.create',
    () =>
      client.incomingPayment.create(
        { url: receiver.resourceServer, accessToken: incomingToken },
        {
          walletAddress: receiver.id,
          incomingAmount: {
            value: input.incomingValue,
            assetCode: receiver.assetCode,
            assetScale: receiver.assetScale
          },
          metadata: { description: 'opapprove interop — Café', externalRef: 'INV-1' }
        }
      ),
    (p) => ({ id: p.id })
  )
  await step('incomingPayment.get', () =>
    client.incomingPayment.get({ url: incomingPayment.id, accessToken: incomingToken })
  )
  await step('incomingPayment.getPublic', () =>
    publicClient.incomingPayment.get({ url: incomingPayment.id })
  )
  const incomingList = await step('incomingPayment.list', () =>
    client.incomingPayment.list(
      { url: receiver.resourceServer, accessToken: incomingToken, walletAddress: receiver.id },
      { first: 10 }
    )
  )
  check(
    'incoming list holds the payment',
    incomingList.result.some((p) => p.id === incomingPayment.id),
    JSON.stringify(incomingList)
  )

  // Quote on the sender.
  const quoteGrant = await step('grant.request (quote)', () =>
    client.grant.request(
      { url: sender.authServer },
      { access_token: { access: [{ type: 'quote', actions: ['create', 'read'] }] } }
    )
  )
  check('quote grant is finalized', isFinalizedGrantWithAccessToken(quoteGrant), 'it is pending')
  const quoteToken = quoteGrant.access_token.value
  const quote = await step(
    'quote.create',
    () =>
      client.quote.create(
        { url: sender.resourceServer, accessToken: quoteToken },
        { walletAddress: sender.id, receiver: incomingPayment.id, method: 'ilp' }
      ),
    (q) => ({ id: q.id, debitAmount: q.debitAmount, receiveAmount: q.receiveAmount })
  )
  await step('quote.get', () => client.quote.get({ url: quote.id, accessToken: quoteToken }))

  // Interactive outgoing-payment grant, approved headlessly.
  const clientNonce = randomUUID()
  const pending = await step(
    'grant.request (outgoing-payment, interactive)',
    () =>
      client.grant.request(
        { url: sender.authServer },
        {
          access_token: {
            access: [
              {
                type: 'outgoing-payment',
                actions: ['create', 'read', 'list'],
                identifier: sender.id,
                limits: { debitAmount: quote.debitAmount, receiver: incomingPayment.id }
              }
            ]
          },
          interact: {
            start: ['redirect'],
            finish: { method: 'redirect', uri: input.finishUri, nonce: clientNonce }
          }
        }
      ),
    (g) => ({ pending: isPendingGrant(g), wait: g.continue?.wait })
  )
  check('outgoing grant is pending', isPendingGrant(pending), JSON.stringify(pending))
  const approval = await adminJson(`${admin}/approve`, {
    method: 'POST',
    body: JSON.stringify({ redirect: pending.interact.redirect })
  })
  const finishUrl = new URL(approval.finish_url)
  steps.push({ op: 'admin approve', ok: true, finish: finishUrl.origin + finishUrl.pathname })
  const interactRef = finishUrl.searchParams.get('interact_ref')
  const receivedHash = finishUrl.searchParams.get('hash')
  const expectedHash = rafikiHash(clientNonce, pending.interact.finish, interactRef, sender.authServer)
  out.hash = { received: receivedHash, expected: expectedHash, matches: receivedHash === expectedHash }
  check('finish hash (Rafiki algorithm)', out.hash.matches, JSON.stringify(out.hash))

  const waitSeconds = pending.continue.wait || 0
  if (waitSeconds > 0) await new Promise((r) => setTimeout(r, waitSeconds * 1000))
  const grant = await step(
    'grant.continue',
    () =>
      client.grant.continue(
        { url: pending.continue.uri, accessToken: pending.continue.access_token.value },
        { interact_ref: interactRef }
      ),
    (g) => ({ finalized: isFinalizedGrantWithAccessToken(g) })
  )
  check('continued grant is finalized', isFinalizedGrantWithAccessToken(grant), JSON.stringify(grant))

  // Outgoing payment: create, get, list, spent amounts.
  let token = grant.access_token
  const outgoing = await step(
    'outgoingPayment.create',
    () =>
      client.outgoingPayment.create(
        { url: sender.resourceServer, accessToken: token.value },
        { walletAddress: sender.id, quoteId: quote.id, metadata: { orderId: 'order-1' } }
      ),
    (p) => ({ id: p.id, debitAmount: p.debitAmount, sentAmount: p.sentAmount, failed: p.failed })
  )
  out.debitAmount = outgoing.debitAmount
  out.receiveAmount = outgoing.receiveAmount
  const fetched = await step(
    'outgoingPayment.get',
    () => client.outgoingPayment.get({ url: outgoing.id, accessToken: token.value }),
    (p) => ({ sentAmount: p.sentAmount, failed: p.failed })
  )
  out.sentAmount = fetched.sentAmount
  const outgoingList = await step('outgoingPayment.list', () =>
    client.outgoingPayment.list(
      { url: sender.resourceServer, accessToken: token.value, walletAddress: sender.id },
      { first: 10 }
    )
  )
  check(
    'outgoing list holds the payment',
    outgoingList.result.some((p) => p.id === outgoing.id),
    JSON.stringify(outgoingList)
  )
  out.grantSpent = await step('outgoingPayment.getGrantSpentAmounts', () =>
    client.outgoingPayment.getGrantSpentAmounts({
      url: sender.resourceServer,
      accessToken: token.value
    })
  )

  // The receiver sees the money arrive; then it completes the incoming payment.
  const arrived = await step(
    'incomingPayment.get (after payment)',
    () => client.incomingPayment.get({ url: incomingPayment.id, accessToken: incomingToken }),
    (p) => ({ receivedAmount: p.receivedAmount, completed: p.completed })
  )
  out.receivedAmount = arrived.receivedAmount
  out.incomingCompleted = arrived.completed
  // That one completed itself on arrival; `complete` is for payments without an amount.
  const openEnded = await step('incomingPayment.create (no amount)', () =>
    client.incomingPayment.create(
      { url: receiver.resourceServer, accessToken: incomingToken },
      { walletAddress: receiver.id }
    )
  )
  const completed = await step(
    'incomingPayment.complete',
    () => client.incomingPayment.complete({ url: openEnded.id, accessToken: incomingToken }),
    (p) => ({ completed: p.completed })
  )
  check('complete marks it completed', completed.completed === true, JSON.stringify(completed))

  // Token rotation: the new token works, the old one is refused.
  const oldToken = token
  token = await step(
    'token.rotate',
    () => client.token.rotate({ url: oldToken.manage, accessToken: oldToken.value }),
    (t) => ({ newManage: t.access_token?.manage !== oldToken.manage })
  ).then((r) => r.access_token)
  check('rotation gave a new token', token.value !== oldToken.value, 'same token value')
  await step('outgoingPayment.get (rotated token)', () =>
    client.outgoingPayment.get({ url: outgoing.id, accessToken: token.value })
  )
  out.oldTokenRefusal = await stepExpectingError('outgoingPayment.get (old token)', () =>
    client.outgoingPayment.get({ url: outgoing.id, accessToken: oldToken.value })
  )
  await step('token.revoke (quote token)', () =>
    client.token.revoke({ url: quoteGrant.access_token.manage, accessToken: quoteToken })
  )

  // Cancel the outgoing-payment grant; its token stops working.
  await step('grant.cancel', () =>
    client.grant.cancel({ url: grant.continue.uri, accessToken: grant.continue.access_token.value })
  )
  out.cancelledTokenRefusal = await stepExpectingError(
    'outgoingPayment.get (cancelled grant)',
    () => client.outgoingPayment.get({ url: outgoing.id, accessToken: token.value })
  )
  // A repeated cancel: Rafiki's 401 invalid_continuation "invalid grant" (4b, 4i).
  out.repeatedCancel = await stepExpectingError('grant.cancel (again)', () =>
    client.grant.cancel({ url: grant.continue.uri, accessToken: grant.continue.access_token.value })
  )

  // Rejections, as the SDK sees them: by the finish redirect, and while polling.
  const interactiveRequest = (finish) =>
    client.grant.request(
      { url: sender.authServer },
      {
        access_token: {
          access: [
            {
              type: 'outgoing-payment',
              actions: ['create', 'read'],
              identifier: sender.id,
              limits: { debitAmount: quote.debitAmount }
            }
          ]
        },
        interact: finish
          ? { start: ['redirect'], finish: { method: 'redirect', uri: input.finishUri, nonce: randomUUID() } }
          : { start: ['redirect'] }
      }
    )
  const toReject = await step('grant.request (to reject, redirect)', () => interactiveRequest(true))
  const rejection = await adminJson(`${admin}/approve`, {
    method: 'POST',
    body: JSON.stringify({ redirect: toReject.interact.redirect, reject: true })
  })
  out.rejectRedirect = Object.fromEntries(new URL(rejection.finish_url).searchParams)
  check('rejection redirect says grant_rejected', out.rejectRedirect.result === 'grant_rejected', rejection.finish_url)
  out.rejectedRedirectPoll = await stepExpectingError('grant.continue (rejected, redirect)', () =>
    client.grant.continue({ url: toReject.continue.uri, accessToken: toReject.continue.access_token.value })
  )
  const toPoll = await step('grant.request (to reject, poll)', () => interactiveRequest(false))
  await adminJson(`${admin}/approve`, {
    method: 'POST',
    body: JSON.stringify({ redirect: toPoll.interact.redirect, reject: true })
  })
  out.rejectedPoll = await stepExpectingError('grant.continue (rejected, poll)', () =>
    client.grant.continue({ url: toPoll.continue.uri, accessToken: toPoll.continue.access_token.value })
  )

  // The sandbox refuses what Rafiki refuses: a key the client wallet does not publish, and a
  // known kid signed with another key.
  const strangerKey = generateKeyPairSync('ed25519').privateKey
  for (const [op, keyId] of [
    ['grant.request (unknown kid)', `${input.keyId}-unknown`],
    ['grant.request (wrong key for kid)', input.keyId]
  ]) {
    const stranger = await createAuthenticatedClient({
      walletAddressUrl: input.clientWalletUrl,
      keyId,
      privateKey: strangerKey,
      validateResponses: true
    })
    out.refusals = out.refusals || {}
    out.refusals[op] = await stepExpectingError(op, () =>
      stranger.grant.request(
        { url: sender.authServer },
        { access_token: { access: [{ type: 'quote', actions: ['create', 'read'] }] } }
      )
    )
  }

  // Control: a document that is not a wallet address must fail validation, or the zero
  // validation errors above would prove nothing.
  try {
    await publicClient.walletAddress.get({ url: `${admin}/accounts` })
    steps.push({ op: 'control: validation is live', ok: false, error: 'no validation error' })
  } catch (err) {
    const live = err instanceof OpenPaymentsClientError && err.validationErrors?.length > 0
    steps.push({ op: 'control: validation is live', ok: live, seen: err.validationErrors })
  }

  const accountsAfter = await adminJson(`${admin}/accounts`)
  out.balances = {
    senderBefore: balanceOf(accountsBefore, sender.id).toString(),
    senderAfter: balanceOf(accountsAfter, sender.id).toString(),
    receiverBefore: balanceOf(accountsBefore, receiver.id).toString(),
    receiverAfter: balanceOf(accountsAfter, receiver.id).toString()
  }
  out.ok = steps.every((s) => s.ok)
}

async function main() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  const input = JSON.parse(Buffer.concat(chunks).toString('utf8'))
  try {
    await flow(input)
  } catch (err) {
    if (!(err instanceof StepFailed)) steps.push({ op: 'script', ok: false, ...describeError(err) })
  }
  process.stdout.write(JSON.stringify(out))
}

main()
