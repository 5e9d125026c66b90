// Package e2etest holds helpers the end-to-end and fault-injection tests
// share: a real Mosquitto broker they can stop and start, and a TCP proxy
// that can cut a link.
package e2etest
