"""CIFAR-100: 60,000 32×32 colour images of 100 fine classes (Krizhevsky 2009).

Same format, splits (90/10 of the 50,000 training images, official 10,000 test images) and
augmentation as CIFAR-10, so only the archive, the file names, the label key (the 100 fine labels,
not the 20 coarse superclasses) and the channel statistics differ.
"""

from __future__ import annotations

from bnnbench.data.cifar10 import Cifar10DataModule
from bnnbench.registry import DATASETS

_FINE_LABELS = """
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster
man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck
pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk
skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank telephone television
tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
"""


@DATASETS.register("cifar100")
class Cifar100DataModule(Cifar10DataModule):
    num_classes = 100
    mean = (0.5071, 0.4865, 0.4409)
    std = (0.2673, 0.2564, 0.2762)
    class_names = tuple(_FINE_LABELS.split())  # in label order, as in the archive's `meta` file

    title = "CIFAR-100"
    archive_url = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    archive_md5 = "eb9058c3a382ffc7106e4002c42a8d85"
    folder = "cifar-100-python"
    train_files = ("train",)
    test_files = ("test",)
    label_key = b"fine_labels"
