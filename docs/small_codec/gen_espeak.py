# Synthetic training speech for the small codec: 160 espeak-ng clips (the run used the first 60).
# Run from the repository root after `apt-get install espeak-ng`; writes espeak/es_NNN.wav.
import os
os.makedirs("espeak", exist_ok=True)
import random, subprocess, csv
random.seed(0)
lines = [r.split('|')[1] for r in open('tests/data/ljspeech/metadata.csv', encoding='utf-8').read().splitlines() if '|' in r]
extra = """The quick brown fox jumps over the lazy dog near the river bank.
Please call Stella and ask her to bring these things with her from the store.
Six spoons of fresh snow peas, five thick slabs of blue cheese, and maybe a snack for her brother Bob.
We also need a small plastic snake and a big toy frog for the kids.
She can scoop these things into three red bags, and we will go meet her Wednesday at the train station.
When the sunlight strikes raindrops in the air, they act as a prism and form a rainbow.
The rainbow is a division of white light into many beautiful colors.
These take the shape of a long round arch, with its path high above, and its two ends apparently beyond the horizon.
There is, according to legend, a boiling pot of gold at one end.
People look, but no one ever finds it.
A codec turns speech into a small stream of numbers and back again.
How much wood would a woodchuck chuck if a woodchuck could chuck wood?
It is twenty past seven on a cold Tuesday morning in early November.
Numbers like three hundred and forty two, or nineteen eighty four, are read aloud here.
Is this the right way to the museum, or should we turn left at the bridge?
I never said she stole my money, but someone certainly did.""".splitlines()
sents = lines + extra
voices = ['en-us', 'en-gb', 'en-gb-scotland', 'en-gb-x-rp', 'en-029', 'en-us-nyc', 'en-gb-x-gbclan', 'en-gb-x-gbcwmd']
variants = ['m1','m2','m3','m4','m5','m6','m7','f1','f2','f3','f4','f5','klatt','klatt2','klatt4','croak','whisper']
for i in range(160):
    s = random.choice(sents)
    v = random.choice(voices) + '+' + random.choice(variants)
    speed = random.randint(130, 200); pitch = random.randint(20, 80)
    out = f'espeak/es_{i:03d}.wav'
    subprocess.run(['espeak-ng', '-v', v, '-s', str(speed), '-p', str(pitch), '-w', out, s], check=True)
