"""
Provides shared documents (contract §9): Yjs documents of a room that stock
`yjs` + `y-websocket` clients edit together at `/ws/docs/{room}/{name}`.

(docs/architecture.md, "Why the modules are as they are")
"""
