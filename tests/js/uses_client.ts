// A TypeScript site using the client (tsconfig.json; `make lint` runs tsc --strict).
import {
  RealtimeClient,
  type ErrorEvent,
  type MessageFrame,
  type NotificationFrame,
  type PublicationFrame,
} from '../../chat/static/realtime/client.js';

const client = new RealtimeClient({
  url: () => Promise.resolve('wss://example.com/rt/ws/?ticket=abc'),
  apiBase: '/rt',
  userId: 7,
  storage: null,
  maxFrameBytes: 65536,
});

client.on('state', ({ state, retryAt }) => {
  const label: string = state === 'online' ? 'live' : `retry at ${retryAt ?? 'now'}`;
  console.log(label);
});

const stop = client.on('message', (m: MessageFrame) => {
  const line: string = `${m.user.username} #${m.seq} in ${m.room}: ${m.content} at ${m.created_at}`;
  console.log(line, m.id, m.client_id);
});
stop();

client.on('notification', (frame: NotificationFrame) => {
  const n = frame.notification;
  console.log(n.id, n.kind, n.data, n.read, n.created_at);
});

client.on('error', (e: ErrorEvent) => {
  if (e.code === 'RATE_LIMITED' && e.room) console.log(`slow down in ${e.room}`);
});
client.on('presence', (p) => p.joins.map((j) => `${j.user.username} ${j.status}`));

interface Counter {
  count: number;
}
const unsubscribe = client.subscribe<Counter>(
  'shop:orders-count',
  (data: Counter, publication: PublicationFrame<Counter>) => {
    const total: number = data.count + publication.offset;
    console.log(total, publication.key ?? '');
  },
  { since: 0, onError: (e) => console.log(e.topic, e.code) },
);
unsubscribe();

client.connect().join('general', { since: 10 });
const clientId: string = client.send('general', 'hello');
client.typing('general', true);
client.read('general', 12);
client.setPresence('away');
console.log(clientId, client.lastSeq('general'), client.pending('general'), client.topicPosition('shop:x'));
client.close();
