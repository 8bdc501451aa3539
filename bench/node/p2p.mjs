// The official Node SDK (@interledger/open-payments 7.4.0, from tests/interop/node_modules)
// doing what its peer-to-peer example does, one request after another, with the client it
// creates by default (response validation on).
//
//   node p2p.mjs start   stdin {sendingWalletUrl, receivingWalletUrl, clientWalletUrl, keyId,
//                               privateKeyPem, value, finishUri}
//                        steps 1-7: wallet addresses, incoming-payment grant, incoming payment,
//                        quote grant, quote, interactive outgoing-payment grant
//                        stdout {redirect, continueUri, continueToken, quoteId, ...}
//   node p2p.mjs finish  stdin the start output plus {interactRef, clientWalletUrl, keyId,
//                               privateKeyPem}
//                        continue the grant, create the outgoing payment, read it back
//                        stdout {paymentId, sentAmount}
import { createPrivateKey, randomUUID } from 'node:crypto'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const require = createRequire(join(root, 'tests', 'interop', 'package.json'))
const { createAuthenticatedClient, isFinalizedGrant, isPendingGrant } = require(
  '@interledger/open-payments'
)

async function readInput() {
  const chunks = []
  for await (const chunk of process.stdin) chunks.push(chunk)
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

function client(input) {
  return createAuthenticatedClient({
    walletAddressUrl: input.clientWalletUrl,
    keyId: input.keyId,
    privateKey: createPrivateKey(input.privateKeyPem)
  })
}

async function start(input) {
  const op = await client(input)
  const sendingWalletAddress = await op.walletAddress.get({ url: input.sendingWalletUrl })
  const receivingWalletAddress = await op.walletAddress.get({ url: input.receivingWalletUrl })

  const incomingPaymentGrant = await op.grant.request(
    { url: receivingWalletAddress.authServer },
    {
      access_token: {
        access: [{ type: 'incoming-payment', actions: ['read', 'complete', 'create'] }]
      }
    }
  )
  if (!isFinalizedGrant(incomingPaymentGrant)) throw new Error('incoming grant is pending')
  const incomingPayment = await op.incomingPayment.create(
    {
      url: receivingWalletAddress.resourceServer,
      accessToken: incomingPaymentGrant.access_token.value
    },
    {
      walletAddress: receivingWalletAddress.id,
      incomingAmount: {
        assetCode: receivingWalletAddress.assetCode,
        assetScale: receivingWalletAddress.assetScale,
        value: input.value
      }
    }
  )

  const quoteGrant = await op.grant.request(
    { url: sendingWalletAddress.authServer },
    { access_token: { access: [{ type: 'quote', actions: ['create', 'read'] }] } }
  )
  if (!isFinalizedGrant(quoteGrant)) throw new Error('quote grant is pending')
  const quote = await op.quote.create(
    { url: sendingWalletAddress.resourceServer, accessToken: quoteGrant.access_token.value },
    { walletAddress: sendingWalletAddress.id, receiver: incomingPayment.id, method: 'ilp' }
  )

  const outgoingPaymentGrant = await op.grant.request(
    { url: sendingWalletAddress.authServer },
    {
      access_token: {
        access: [
          {
            type: 'outgoing-payment',
            actions: ['read', 'create'],
            limits: { debitAmount: quote.debitAmount },
            identifier: sendingWalletAddress.id
          }
        ]
      },
      interact: {
        start: ['redirect'],
        finish: { method: 'redirect', uri: input.finishUri, nonce: randomUUID() }
      }
    }
  )
  if (!isPendingGrant(outgoingPaymentGrant)) throw new Error('outgoing grant is not pending')
  return {
    redirect: outgoingPaymentGrant.interact.redirect,
    continueUri: outgoingPaymentGrant.continue.uri,
    continueToken: outgoingPaymentGrant.continue.access_token.value,
    quoteId: quote.id,
    sendingWalletId: sendingWalletAddress.id,
    sendingResourceServer: sendingWalletAddress.resourceServer
  }
}

async function finish(input) {
  const op = await client(input)
  const grant = await op.grant.continue(
    { url: input.continueUri, accessToken: input.continueToken },
    { interact_ref: input.interactRef }
  )
  if (!isFinalizedGrant(grant)) throw new Error('the continued grant is not finalized')
  const payment = await op.outgoingPayment.create(
    { url: input.sendingResourceServer, accessToken: grant.access_token.value },
    { walletAddress: input.sendingWalletId, quoteId: input.quoteId }
  )
  const seen = await op.outgoingPayment.get({
    url: payment.id,
    accessToken: grant.access_token.value
  })
  return { paymentId: seen.id, sentAmount: seen.sentAmount }
}

async function main() {
  const mode = process.argv[2]
  const input = await readInput()
  const result = mode === 'start' ? await start(input) : await finish(input)
  process.stdout.write(JSON.stringify(result))
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n')
  if (err && err.validationErrors) process.stderr.write(JSON.stringify(err.validationErrors))
  process.exit(1)
})
