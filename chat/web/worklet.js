// Microphone capture on the audio thread: posts 20 ms chunks of mono float PCM to the page.
class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.chunk = options.processorOptions.chunk;
    this.buffer = new Float32Array(this.chunk);
    this.filled = 0;
  }

  process(inputs) {
    const input = inputs[0];
    if (input && input[0]) {
      const samples = input[0];
      let i = 0;
      while (i < samples.length) {
        const n = Math.min(samples.length - i, this.chunk - this.filled);
        this.buffer.set(samples.subarray(i, i + n), this.filled);
        this.filled += n;
        i += n;
        if (this.filled === this.chunk) {
          this.port.postMessage(this.buffer.slice());
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("moshi-capture", CaptureProcessor);
