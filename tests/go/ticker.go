// A Go program that lives on the runtime's timers: a producer goroutine that sleeps between
// values, a ticker that paces the consumer, and channels between them (issue 10: the runtime
// holds an epoll instance and a pipe or eventfd to wake it). Its output does not depend on
// timing, so a migrated run must print exactly what an uninterrupted one does.
package main

import (
	"fmt"
	"time"
)

func main() {
	values := make(chan int)
	go func() {
		for i := 0; i < 80; i++ {
			time.Sleep(15 * time.Millisecond)
			values <- i * i
		}
		close(values)
	}()
	ticker := time.NewTicker(25 * time.Millisecond)
	defer ticker.Stop()
	timeout := time.After(time.Hour)
	n := 0
	for v := range values {
		select {
		case <-ticker.C:
		case <-timeout:
			fmt.Println("timed out")
			return
		}
		n++
		fmt.Printf("value %d: %d\n", n, v)
	}
	fmt.Println("done after", n, "values")
}
