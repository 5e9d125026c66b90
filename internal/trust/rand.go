package trust

import "crypto/rand"

var cryptoRand = rand.Reader
