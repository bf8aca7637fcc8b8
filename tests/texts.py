"""Text for the tests, written here: nothing is read from outside the repository.

English prose at scale comes from the project's built-in corpus (`english`, built once per session by
conftest.py from CPython's help topics and docstrings). Other scripts are short paragraphs written for
these tests: German (umlauts, ß, long compounds), Russian (Cyrillic, two bytes a letter), Chinese (CJK,
three bytes a character, no spaces), and generated long words that any byte cap must cut.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

GERMAN = """\
Am Ufer der Donau steht ein altes Fährhaus, in dem früher die Schiffer übernachteten. Heute wohnt dort eine \
Lehrerin, die jeden Morgen mit dem Fahrrad über die Brücke fährt und die Möwen zählt.
Im Frühling öffnet sie die Fenster weit, damit der Geruch von nassem Gras und blühenden Äpfeln ins Zimmer \
strömt. Ihre Nachbarn behaupten, sie könne am Gesang der Vögel erkennen, ob es am Nachmittag regnen wird.

Die Donaudampfschifffahrtsgesellschaft hatte hier einmal einen Anlegesteg, aber der wurde nach dem großen \
Hochwasser abgerissen. Übrig geblieben sind nur ein paar Pfähle, auf denen sich Kormorane sonnen.
Wer genau hinsieht, entdeckt zwischen den Steinen noch verrostete Ringe, an denen früher die Boote \
festgemacht wurden. Kinder aus dem Dorf suchen dort im Sommer nach Münzen und Glasscherben.

Ein Geschichtsverein möchte das Fährhaus in ein kleines Museum verwandeln. Dafür braucht er Fördergelder, \
Genehmigungen der Straßenbaubehörde und vor allem Geduld, denn die Antragsformulare sind länger als jeder Roman.
Die Lehrerin hat nichts dagegen, solange sie ihr Arbeitszimmer unter dem Dach behalten darf. Von dort aus \
sieht man bei klarem Wetter bis zu den Weinbergen, die sich über die Hügel im Süden ziehen.

Abends sitzen die Älteren auf der Bank vor der Gaststätte und erzählen von früher: von Eisgängen, die den \
Fluss über Nacht zum Stillstand brachten, und von Sommern, in denen das Wasser so niedrig war, dass man \
trockenen Fußes bis zur Sandbank gehen konnte. Niemand weiß, wie viel davon stimmt, aber alle hören gern zu.
"""

RUSSIAN = """\
На краю деревни стоит старая мельница, которую давно никто не чинил. Её крылья больше не вращаются, но \
летом на крыше гнездятся аисты, и дети каждое утро прибегают посмотреть на птенцов.
Бабушка Анна помнит времена, когда здесь мололи зерно для всей округи. По её словам, очередь из телег \
тянулась до самого леса, а мельник знал по имени каждого крестьянина.

Осенью в деревню приезжают студенты из города. Они измеряют стены, фотографируют деревянные шестерёнки и \
записывают рассказы стариков в толстые тетради. Говорят, что мельницу хотят превратить в музей.
Местные жители относятся к этому с недоверием: им кажется, что музей привлечёт туристов, а вместе с ними \
шум, мусор и машины на узкой дороге вдоль реки.

Зимой мельница стоит в снегу, словно корабль, застрявший во льдах. Над рекой поднимается туман, и по утрам \
на ветках берёз висит иней. Рыбаки сверлят лунки и часами сидят на льду, почти не разговаривая.
Весной лёд трескается с таким грохотом, что собаки лают до самого вечера. Вода поднимается, заливает луга, \
и несколько дней в соседнее село можно добраться только на лодке.

Учительница местной школы предложила детям написать сочинение о мельнице. Один мальчик придумал историю о \
домовом, который живёт под жерновами и по ночам считает зёрна. Другая девочка написала о том, как однажды \
мельница снова заработает, и все будут печь хлеб из собственной муки.
"""

CHINESE = """\
我们村子旁边有一条小河，河水清澈见底，夏天的时候孩子们常常在河边捉鱼。河的对岸是一片竹林，风一吹，竹叶沙沙作响，\
像是有人在轻声说话。
爷爷年轻的时候是一个木匠，他做的桌子和椅子结实又好看。村里很多人家里至今还在用他做的家具，每当有人提起，爷爷总是笑着摆摆手。

每年春天，田里的油菜花开了，整个山谷都变成了金黄色。城里的游客开车过来拍照，村口的小饭馆也热闹起来。奶奶说，以前这里\
很少有外人来，大家种地、养鸡、喂猪，日子过得简单而安静。
现在年轻人大多去城市打工了，只有过年的时候才回来。村子里老人和孩子比较多，学校也从原来的六个班减少到了两个班。

去年，村里修了一条新的水泥路，从镇上到村口只要二十分钟。路修好以后，有人开了一家农家乐，还有人在网上卖自己种的茶叶和\
蜂蜜。村长说，只要大家愿意想办法，日子一定会越来越好。
晚上，月亮升起来，河面上闪着银色的光。老人们坐在院子里聊天，讲过去的故事，孩子们躺在竹椅上数星星，不知不觉就睡着了。

秋天是收获的季节。稻谷熟了，家家户户都忙着收割、晒谷。空气里弥漫着稻草的香味，田埂上到处是忙碌的身影。等到粮食都收进\
仓库，村里会请戏班来唱几天戏，男女老少都搬着凳子去看，一直热闹到深夜。
"""

FOREIGN = {"de": GERMAN, "ru": RUSSIAN, "zh": CHINESE}


def long_words(n: int = 60, seed: int = 0) -> str:
    """Prose-like lines of generated words, many longer than any cap the tests use (up to 90 letters):
    Latin, Cyrillic, German compounds and CJK runs without spaces; a blank line after every 10 lines."""
    rng = random.Random(seed)
    alphabets = ["abcdefghijklmnopqrstuvwxyz", "абвгдеёжзийклмнопрстуфхцчшщъыьэюя", "äöüßaeinrst",
                 "的一是在不了有和人这中大为上个国我以要他"]
    lines = []
    for i in range(n):
        letters = alphabets[i % len(alphabets)]
        words = ["".join(rng.choice(letters) for _ in range(rng.choice([3, 7, 17, 33, 61, 90])))
                 for _ in range(rng.randint(2, 6))]
        lines.append(" ".join(words) + rng.choice([".", ",", "!", ""]) + "\n" + ("\n" if i % 10 == 9 else ""))
    return "".join(lines)


def paragraphs(text: str) -> list[str]:
    return [p for p in text.split("\n\n") if p.strip()]


@dataclass
class English:
    """The built-in English corpus (≈1.2 MB, paragraphs separated by blank lines), and slices of it."""
    folder: Path
    files: list[Path]

    @property
    def text(self) -> str:
        return "".join(p.read_text(encoding="utf-8") for p in self.files)

    def prose(self, n_chars: int) -> str:
        """About the first n_chars characters, cut after a complete paragraph (help topics: real prose)."""
        text = self.text
        if n_chars >= len(text):
            return text
        cut = text.rfind("\n\n", 0, n_chars)
        return text[: cut + 2] if cut > 0 else text[:n_chars]

    def lines(self, n: int, min_chars: int = 20) -> list[str]:
        """The first n lines of at least min_chars characters (one sentence-like document each, LF-ended)."""
        out = []
        for line in self.text.splitlines(keepends=True):
            if len(line.strip()) >= min_chars:
                out.append(line)
                if len(out) == n:
                    break
        return out

    def write_lines(self, path: Path, n: int) -> Path:
        path.write_text("".join(self.lines(n)), encoding="utf-8")
        return path

    def write_prose(self, path: Path, n_chars: int) -> Path:
        path.write_text(self.prose(n_chars), encoding="utf-8")
        return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
