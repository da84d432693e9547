// spread: CPU work spread over goroutines on several OS threads (GOMAXPROCS >= 2), with a
// deterministic result. Each round splits a range of numbers into chunks, one goroutine per
// chunk; each chunk iterates a xorshift hash; the round's line combines the chunks in order.
// No timers, no sleeps, no network: only goroutines, channels and a WaitGroup.
//
// usage: spread ROUNDS CHUNKS ITERATIONS
package main

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync"
)

func chunk(round, index, iterations uint64) uint64 {
	x := round*0x9e3779b97f4a7c15 ^ (index+1)*0xbf58476d1ce4e5b9
	var acc uint64
	for i := uint64(0); i < iterations; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		acc += x >> 11
	}
	return acc ^ x
}

func arg(i int) uint64 {
	v, err := strconv.ParseUint(os.Args[i], 10, 64)
	if err != nil {
		fmt.Fprintln(os.Stderr, "usage: spread ROUNDS CHUNKS ITERATIONS")
		os.Exit(2)
	}
	return v
}

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: spread ROUNDS CHUNKS ITERATIONS")
		os.Exit(2)
	}
	rounds, chunks, iterations := arg(1), arg(2), arg(3)
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	var total uint64
	results := make([]uint64, chunks)
	for r := uint64(0); r < rounds; r++ {
		var wg sync.WaitGroup
		for c := uint64(0); c < chunks; c++ {
			wg.Add(1)
			go func(c uint64) {
				defer wg.Done()
				results[c] = chunk(r, c, iterations)
			}(c)
		}
		wg.Wait()
		var h uint64
		for _, v := range results {
			h = h*1099511628211 ^ v
		}
		total += h
		fmt.Printf("round %d %016x\n", r, h)
	}
	fmt.Printf("total %016x\n", total)
}
