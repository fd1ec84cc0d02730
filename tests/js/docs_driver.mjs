// Stock `yjs` + `y-websocket` clients under Node, driven line by line from
// stdin (one JSON command per line, one JSON reply per line on stdout), for
// tests/live/test_docs_live.py and bench/docs.py. Node 20 has no global
// WebSocket: the `ws` package is passed as y-websocket's WebSocketPolyfill,
// sending `Authorization: Token …` on the handshake.
import { createInterface } from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'

const clients = new Map()

function out (message) {
  process.stdout.write(JSON.stringify(message) + '\n')
}

function socketClass (token) {
  return class extends WebSocket {
    constructor (url, protocols) {
      super(url, protocols, { headers: token ? { Authorization: `Token ${token}` } : {} })
    }
  }
}

function open ({ id, url, room, token, name }) {
  const doc = new Y.Doc()
  const provider = new WebsocketProvider(url, room, doc, {
    WebSocketPolyfill: socketClass(token),
    disableBc: true,
    // The server closes what it refuses; retry fast so tests do not wait.
    maxBackoffTime: 500
  })
  const client = { id, doc, provider, closes: [], synced: false, stamps: new Map() }
  provider.on('sync', (synced) => { client.synced = synced })
  provider.on('connection-close', (event) => {
    client.closes.push({ code: event?.code ?? null, reason: String(event?.reason ?? '') })
  })
  if (name) provider.awareness.setLocalStateField('user', { name })
  // Latency probes (bench/docs.py): each update applied from the server
  // records when each stamped insert it carries arrived.
  doc.getMap('stamps').observe((event) => {
    if (event.transaction.local) return
    const now = Date.now()
    for (const key of event.keysChanged) {
      if (!client.stamps.has(key)) client.stamps.set(key, now - doc.getMap('stamps').get(key))
    }
  })
  clients.set(id, client)
  return {}
}

const text = (client) => client.doc.getText('content').toString()

function peers (client) {
  const names = []
  for (const [clientId, state] of client.provider.awareness.getStates()) {
    if (clientId !== client.doc.clientID && state?.user?.name) names.push(state.user.name)
  }
  return names.sort()
}

async function until (check, timeout) {
  const deadline = Date.now() + timeout * 1000
  while (Date.now() < deadline) {
    if (check()) return true
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return check()
}

const commands = {
  open,
  async wait_synced ({ id, timeout = 20 }) {
    const client = clients.get(id)
    return { ok: await until(() => client.synced, timeout), closes: client.closes }
  },
  insert ({ id, index, text: value }) {
    const content = clients.get(id).doc.getText('content')
    content.insert(index === undefined ? content.length : Math.min(index, content.length), value)
    return { text: content.toString() }
  },
  delete ({ id, index, length }) {
    clients.get(id).doc.getText('content').delete(index, length)
    return {}
  },
  stamp ({ id, key }) {
    clients.get(id).doc.getMap('stamps').set(key, Date.now())
    return {}
  },
  stamps ({ id }) {
    return { stamps: Object.fromEntries(clients.get(id).stamps) }
  },
  text ({ id }) {
    return { text: text(clients.get(id)) }
  },
  async wait_text ({ id, text: expected, timeout = 20 }) {
    const client = clients.get(id)
    const ok = await until(() => text(client) === expected, timeout)
    return { ok, text: text(client) }
  },
  async wait_includes ({ id, parts, timeout = 20 }) {
    const client = clients.get(id)
    const ok = await until(() => parts.every((part) => text(client).includes(part)), timeout)
    return { ok, text: text(client) }
  },
  async wait_close ({ id, timeout = 20 }) {
    const client = clients.get(id)
    const ok = await until(() => client.closes.length > 0, timeout)
    return { ok, closes: client.closes }
  },
  disconnect ({ id }) {
    clients.get(id).provider.disconnect()
    return {}
  },
  connect ({ id }) {
    const client = clients.get(id)
    client.synced = false
    client.provider.connect()
    return {}
  },
  peers ({ id }) {
    return { peers: peers(clients.get(id)) }
  },
  async wait_peers ({ id, peers: expected, timeout = 20 }) {
    const client = clients.get(id)
    const want = JSON.stringify([...expected].sort())
    const ok = await until(() => JSON.stringify(peers(client)) === want, timeout)
    return { ok, peers: peers(client) }
  },
  close ({ id }) {
    const client = clients.get(id)
    client.provider.destroy()
    client.doc.destroy()
    clients.delete(id)
    return {}
  }
}

const lines = createInterface({ input: process.stdin })
lines.on('line', async (line) => {
  if (!line.trim()) return
  const command = JSON.parse(line)
  try {
    const run = commands[command.cmd]
    if (!run) throw new Error(`unknown command ${command.cmd}`)
    out({ req: command.req, ...(await run(command)) })
  } catch (error) {
    out({ req: command.req, error: String(error?.stack || error) })
  }
})
lines.on('close', () => {
  for (const client of clients.values()) client.provider.destroy()
  process.exit(0)
})
