// Must FAIL to type-check (tests/test_client_types.py): a message frame has no `body`.
import { RealtimeClient } from '../../../chat/static/realtime/client.js';

new RealtimeClient().on('message', (m) => console.log(m.body));
