"""Layered layouts: designed from scratch or into a photo with a planner and SmartMask (`designer`), stored in the
lake as versions (`store`), edited layer by layer (`ops`), drawn as a colour picture with a legend and rendered to
an image (`render`). `layered` holds the data model every other module shares."""
