#!/usr/bin/env python3
"""Regenerate the small sample datasets bundled in this directory.

Everything here is hand-written for this project (CC0). The script composes
hand-written question/answer pieces into short, coherent conversations and
writes them out in the formats the recipes use:

    chat_multiturn/{train,test}.jsonl   OpenAI "messages" format, 2-3 exchanges
    samples/sharegpt.jsonl              ShareGPT "conversations" format
    samples/instructions.json           Alpaca-style instruction/input/output (JSON array)
    instructions/{train,test}.jsonl     single-turn instruction/response
    guanaco_style/{train,test}.jsonl    "### Human: ...### Assistant: ..." text

Each conversation "tree" has an opening question (two phrasings), three
follow-ups that build on the opening answer, and one deeper follow-up for each
follow-up.  A conversation is one path through a tree, so every user turn
really responds to the assistant turn before it.  Whole trees are held out for
the test splits, so no test conversation shares an opening with train.

Deterministic: standard library only, fixed seed.  Run from anywhere:

    python3 datasets/make_samples.py
"""

import json
import random
from pathlib import Path

SEED = 3407
HERE = Path(__file__).resolve().parent

TREES = []


def tree(tid, lang, topic, opens, answer, sq, follow_ups, split="train"):
    """Register one conversation tree.

    opens:      two phrasings of the opening user message
    answer:     assistant reply to the opening
    sq:         standalone version of the opening question for single-turn data
                ("=" reuses opens[0])
    follow_ups: three tuples (q, a, sq, (dq, da, dsq)); sq/dsq is a standalone
                rewrite of the question, "=" if it already stands alone, or
                None if it only makes sense inside the conversation.
    """
    TREES.append(dict(id=tid, lang=lang, topic=topic, opens=opens, answer=answer,
                      sq=sq, follow_ups=follow_ups, split=split))


# ---------------------------------------------------------------------------
# 中文 · 青少年/学生心理支持
# ---------------------------------------------------------------------------

tree("zh-sleep-exam", "zh", "counselling",
     ["明天就要期末考试了，我躺在床上怎么都睡不着，越想越慌，怎么办？",
      "考试前一晚总是失眠，脑子停不下来，有什么办法吗？"],
     "考前睡不着很常见，说明你在乎这场考试。先别逼自己马上睡着，可以试试：\n"
     "1. 把担心的事写在纸上，告诉自己明天再处理；\n"
     "2. 慢呼吸几轮，吸气4秒、呼气6秒；\n"
     "3. 放下手机。即使只是闭眼休息，身体也在恢复。",
     "考试前一晚睡不着怎么办？",
     [("如果真的一夜没睡好，第二天考试会不会很糟？",
       "一晚没睡好对发挥的影响通常比想象中小，紧张本身会让你保持清醒。早上吃点东西、提前到考场，做题时先挑有把握的写，很多人这样照样考得不错。",
       "考试前一晚没睡好，第二天会不会影响很大？",
       ("那考试中途突然脑子一片空白怎么办？",
        "先停下笔，慢慢呼吸三次，感受一下双脚踩在地面上。然后跳过这道题，去做一道有把握的，找回节奏再回来。空白通常几十秒就会过去。",
        "考试时突然大脑一片空白怎么办？")),
      ("你说把担心的事写下来，具体写什么呢？",
       "什么都可以写，比如“怕数学最后一题不会”。写完在旁边加一句“我现在能做的是什么”，像“明早再看一遍公式”。写下来以后，大脑就不用一直提醒你了。",
       None,
       ("写完还是会想，停不下来怎么办？",
        "这很正常，不用跟念头较劲。可以给自己定一个“担心时间”，比如明天早饭后想五分钟。现在念头冒出来，就对自己说“留到明天”，再把注意力拉回呼吸。",
        "晚上总是反复想担心的事，停不下来怎么办？")),
      ("我每次大考前都这样，是不是我心理有问题？",
       "不是的，考前紧张是很普遍的反应。如果焦虑持续好几周、影响吃饭睡觉，或者让你想逃避上学，再建议找学校心理老师或专业人士聊聊，这也是照顾自己的一种方式。",
       "每次大考前都焦虑失眠，是不是心理有问题？",
       ("要是想找心理老师，该怎么开口？",
        "可以很简单地说：“老师，我最近考前总睡不着，想找您聊聊。”不需要准备得很完整，也不用等问题很严重才去。心理老师会引导你慢慢说。",
        "想找学校心理老师聊聊，不知道怎么开口？"))])

tree("zh-friend-conflict", "zh", "counselling",
     ["和最好的朋友吵架了，她现在不理我，我该怎么办？",
      "与朋友发生冲突后两个人都在冷战，我很难受，该怎么处理？"],
     "吵架后难受，说明这段友谊对你很重要。可以先让情绪平复一两天，再回想一下：争执的核心是什么、自己哪里做得不妥。然后主动发条消息，表达你在乎这段关系，而不是急着分对错。",
     "与朋友发生冲突时，如何处理？",
     [("第一条消息应该怎么写？我怕说错话。",
       "简单真诚就好，比如：“那天我说话太冲了，对不起。我很在乎我们的友谊，你愿意的话我们聊聊？”先承认自己的部分，不指责对方，也不要求她马上回复。",
       "和朋友吵架后想和好，第一条消息怎么写？",
       ("如果她一直不回我呢？",
        "给她一些时间，有人需要更久才能消化情绪。这段时间照常生活，多和其他朋友相处。如果过了很久仍没有回应，也不代表你不好，有些关系需要顺其自然。",
        "主动道歉后朋友一直不回消息怎么办？")),
      ("可是我觉得错的主要是她，为什么要我先道歉？",
       "主动联系不等于认输，你只需要为自己那部分道歉。见面时可以用“我”开头表达感受，比如“那天你当众开我玩笑，我觉得很难堪”，这样比指责更容易被听进去。",
       "和朋友吵架，觉得错在对方，还要主动道歉吗？",
       ("她听了还是说我太敏感，我该怎么回应？",
        "感受没有对错，你可以平静地说：“也许我比较敏感，但这件事确实让我难过，希望你以后能注意。”如果对方总是否定你的感受，也值得想想这段友谊是否让你舒服。",
        "朋友总说我太敏感，我该怎么回应？")),
      ("吵架这几天我上课都没法集中，怎么办？",
       "人际关系的烦恼很容易占满大脑。可以把想说的话先写下来，告诉自己“放学后再处理”；上课时每走神一次，就轻轻把注意力拉回笔记上。也可以和家人或其他朋友聊聊。",
       "和朋友闹矛盾后上课没法集中注意力怎么办？",
       ("这些话不想跟家里人说，还能找谁？",
        "可以找你信任的老师、班主任，或者学校的心理老师，他们会替你保密。有些学校还有同伴互助小组。说出来本身就能减轻很多压力。",
        "有烦恼不想告诉家里人，还可以找谁倾诉？"))])

tree("zh-parents-compare", "zh", "counselling",
     ["我爸妈总拿我和表哥比较，说他成绩多好，我听了特别难受。",
      "父母老是说“你看看别人家的孩子”，我该怎么跟他们沟通？"],
     "被比较的感觉确实很难受，好像自己怎么努力都不够。父母这样说，多半是焦虑和期待，而不是不爱你。可以找一个大家心情都不错的时候，平静地告诉他们你的感受。",
     "父母总拿我和别人比较，我很难受，怎么办？",
     [("那我具体该怎么说，才不会变成吵架？",
       "试着说感受和需要，少说指责。比如：“每次听到拿我和表哥比，我会觉得自己很差劲，反而更没动力。我希望你们多看看我自己的进步。”语气平和，说完听听他们怎么想。",
       "怎样和父母沟通才不会吵起来？",
       ("他们听完说“我们是为你好”，然后就不聊了。",
        "这说明沟通已经开了个头，别急着一次说通。之后可以用行动配合，比如主动分享一次小进步，让他们看到你的努力。也可以请你信任的亲戚或老师帮忙传达。",
        "跟父母说感受，他们只说“为你好”怎么办？")),
      ("我自己也会偷偷跟表哥比，越比越自卑。",
       "比较是人的本能，关键是比的对象。试着和上个月的自己比：多会了哪些题、哪件事做得更好。每周写下三件小进步，慢慢你会更关注自己的节奏。",
       "总忍不住和别人比较，越比越自卑怎么办？",
       ("可是我真的觉得自己什么都不如别人。",
        "当一个念头变得很绝对，比如“什么都不如”，往往是情绪在放大。可以问问自己：有没有一件事是我做得还行的？如果这种感觉长期挥之不去、影响生活，建议找心理老师聊聊。",
        "总觉得自己什么都不如别人，怎么办？")),
      ("被比较之后我就完全不想学习了，是不是很没出息？",
       "不是没出息，被否定后失去动力是很正常的反应。可以先给自己定一个很小的目标，比如今晚只做十道题，做完就休息。小的完成感会一点点把动力找回来。",
       "被父母比较后完全不想学习，怎么办？",
       ("十道题也做不下去的时候呢？",
        "那就再缩小一点：先打开书，看五分钟。很多时候难的是开始，开始之后会顺一些。如果连续很多天都提不起劲、对什么都没兴趣，要告诉家长或老师，寻求专业帮助。",
        "连很小的学习目标都完成不了怎么办？"))])

tree("zh-speak-class", "zh", "counselling",
     ["上课被老师点名回答问题，我就脸红心跳说不出话，怎么办？",
      "我很怕在全班面前发言，一站起来脑子就空了，怎么克服？"],
     "很多人都有这种紧张，你并不奇怪。心跳加快是身体在帮你“应战”，并不代表你做不好。可以提前准备：课前预习时想好一两个可能被问的点，站起来先慢慢吸一口气再开口。",
     "害怕在全班面前发言怎么办？",
     [("可是我一紧张声音就发抖，同学会笑我吧？",
       "其实别人对你的关注远比你想象的少，大家多半在想自己的事。声音发抖时，可以放慢语速、说短句。就算有人笑，也通常很快就忘了，你不必为此否定自己。",
       "发言时声音发抖，担心被同学笑话怎么办？",
       ("有没有可以平时练习的方法？",
        "可以从低压力的场合开始：先在小组讨论里说一句，再试着在课上主动回答一个简单的问题。每次说完记下“其实没那么糟”。一点点积累，紧张会慢慢下降。",
        "平时怎么练习才能不怕当众说话？")),
      ("站起来之后真的不会，该说什么？",
       "可以诚实又得体地说：“这道题我还没想清楚，能再想一下吗？”或者说出你想到的一部分。老师更在意你是否在思考，而不是每次都答对。",
       "被老师点名却不会回答，该怎么说？",
       ("说完“不会”之后我会一直想着这件事，好几天都难受。",
        "事后反复回想叫“反刍”，很多人都有。可以试着对自己说：“当时确实尴尬，但它已经过去了。”然后做点别的事转移注意力。也可以把它讲给朋友听，你会发现大家没那么在意。",
        "在课堂上出糗后好几天都放不下，怎么办？")),
      ("这种害怕会不会是社交恐惧症？",
       "偶尔在众人面前紧张很普遍，不等于社交恐惧症。如果你因为害怕而长期回避上课、聚会，或者紧张到影响正常生活，可以去找学校心理老师或正规医院的心理科做个评估。",
       "害怕当众说话是不是社交恐惧症？",
       ("去医院看心理科，会不会被同学知道？",
        "就诊信息是受保护的，医生不会随便告诉学校或同学。你可以先和家长商量一起去。寻求帮助是勇敢的事，就像感冒了去看医生一样正常。",
        "去医院看心理科会被同学知道吗？"))])

tree("zh-phone-procrastinate", "zh", "counselling",
     ["我一写作业就想刷手机，一刷就是一两个小时，好后悔。",
      "总是拖延，明明知道要复习，却一直玩手机，怎么改？"],
     "你能意识到这个问题，就已经是改变的开始。手机本来就设计得让人停不下来，不全是你意志力差。可以先改环境：写作业时把手机放到另一个房间，或者交给家人保管一小时。",
     "写作业时总想玩手机，怎么办？",
     [("放别的房间我会忍不住去拿，有什么更好的办法？",
       "可以试试番茄钟：专心学25分钟，休息5分钟，休息时才可以看手机。再打开系统自带的专注模式，把常用的娱乐软件设上时间限制。给冲动加一点“麻烦”，会好控制很多。",
       "总忍不住去拿手机，有什么办法控制？",
       ("番茄钟休息时一看手机又停不下来了。",
        "休息时尽量做不用屏幕的事：喝水、伸懒腰、看看窗外。如果一定要看，就设个5分钟闹钟，闹钟一响就放下。坚持几天，大脑会慢慢习惯这个节奏。",
        "番茄钟休息时看手机停不下来怎么办？")),
      ("我觉得拖延是因为作业太难了，不想开始。",
       "这很常见，难的任务会让人本能地逃避。可以把它拆小：先只读题目，再只写第一步。告诉自己“只做五分钟”，开始之后往往就能继续下去。",
       "作业太难，总是拖着不想开始怎么办？",
       ("拆小了还是不会做，卡住了怎么办？",
        "卡住超过十五分钟，就换个方式：翻课本找类似例题，或者把问题记下来第二天问老师同学。会求助也是一种学习能力，不必一个人死磕到深夜。",
        "写作业卡住不会做怎么办？")),
      ("每次玩完都骂自己没用，越骂越不想学。",
       "自责会消耗能量，反而更难行动。下次可以换成对朋友说话的语气：“刚才放松过头了，没关系，现在开始也来得及。”对自己温和一点，改变才更持久。",
       "拖延后总是自责，越来越不想学，怎么办？",
       ("可是不骂自己，我会不会更懒？",
        "研究和经验都表明，善待自己的人更容易从失败中爬起来。温和不等于放纵：你依然要为结果负责，只是用鼓励代替羞辱。试一周看看效果。",
        "不严格要求自己会不会变得更懒？"))])

tree("zh-new-school-lonely", "zh", "counselling",
     ["刚上大学，宿舍里大家好像都有伴，只有我一个人，很孤单。",
      "转学到一所寄宿学校一个月了还没交到朋友，我是不是很失败？"],
     "刚到新环境觉得孤单非常普遍，很多人只是看起来合群。交朋友需要时间，几周甚至一两个月还没遇到合得来的人都很正常，并不代表你有问题。可以从小事开始，比如每天和一个同学多聊一句。",
     "到了新学校交不到朋友，很孤单怎么办？",
     [("我不知道怎么开口，感觉说什么都很尴尬。",
       "从身边的共同点聊起最自然，比如：“这节课作业你写完了吗？”“食堂哪个窗口好吃？”问开放式问题，认真听对方回答。尴尬是暂时的，多试几次就顺了。",
       "想和新同学搭话，不知道怎么开口？",
       ("聊了几句就冷场了，好尴尬。",
        "冷场很正常，不用每次都聊很久。可以自然地说“那我先去上课啦，回头见”。下次见面再打招呼，熟悉感是靠一次次短暂的接触累积起来的。",
        "和同学聊天总是冷场怎么办？")),
      ("参加社团会有帮助吗？我有点怕生。",
       "会的，社团有共同的兴趣和固定的活动，比硬聊天轻松很多。可以选一个真正感兴趣的，先去参加两三次看看。怕生的话，找一个需要动手的活动，话题会自然出现。",
       "性格怕生，参加社团能帮助交朋友吗？",
       ("去了两次感觉融不进去，要不要退出？",
        "融入通常需要一个多月，两次还太早下结论。可以主动承担一个小任务，比如帮忙拍照或搬东西，这样更容易和人有交集。如果试了很久仍然不舒服，换一个也完全可以。",
        "参加社团感觉融不进去，要不要退出？")),
      ("晚上一个人的时候特别想家，还会偷偷哭。",
       "想家说明你和家人感情很好，哭一哭也是释放情绪。可以和家人约定固定的视频时间，给宿舍添一点熟悉的小物件。白天多安排些活动，晚上会好受一些。",
       "刚离家上学特别想家，晚上偷偷哭怎么办？",
       ("已经一个多月了，还是每天都很难过。",
        "如果难过持续了好几周，而且影响到睡眠、吃饭或上课，建议去学校的心理咨询中心预约一次，大多数大学都是免费的。适应新环境需要帮助，一点都不丢人。",
        "离家上学一个多月还是每天很难过，怎么办？"))])

tree("zh-low-mood", "zh", "counselling",
     ["最近什么都提不起劲，以前喜欢的事也不想做了，这是怎么了？",
      "这段时间总觉得很累很丧，连打游戏都没意思，我该怎么办？"],
     "谢谢你愿意说出来。这种状态持续一段时间会很辛苦。可能和压力、睡眠、作息都有关系。先从照顾身体开始：规律睡觉、吃饭，每天出门走二十分钟，也试着把感受告诉一个信任的人。",
     "最近什么都提不起劲，对喜欢的事也没兴趣了，怎么办？",
     [("已经差不多一个月了，会不会是抑郁？",
       "我不能替你做诊断。但如果低落、没兴趣的状态持续两周以上，并且影响学习和生活，就很值得去医院心理科或精神科做个专业评估。越早寻求帮助，恢复得越快。",
       "情绪低落一个月了，会不会是抑郁？",
       ("我不敢跟爸妈说，怕他们觉得我矫情。",
        "可以先找学校心理老师，他们能帮你想想怎么跟家里说。也可以用写信或发消息的方式告诉父母，写清楚“持续多久、有哪些影响、我需要什么帮助”。你的感受是真实的，不是矫情。",
        "情绪不好不敢告诉父母，怕被说矫情，怎么办？")),
      ("有时候会觉得活着没什么意思。",
       "谢谢你告诉我，这很重要。请尽快把这个想法告诉一个信任的大人，比如家长、老师或心理老师。如果出现伤害自己的念头，请立刻联系身边的人，或拨打当地心理援助热线、急救电话。",
       None,
       ("我现在没有想伤害自己，只是觉得很空。",
        "谢谢你愿意说清楚。那种“空”的感觉也值得被认真对待。这周可以预约一次心理咨询，先聊聊最近发生了什么。如果哪天念头变强，一定马上找人，不要一个人扛着。",
        None)),
      ("你说每天走二十分钟，真的有用吗？",
       "运动不是万能药，但对情绪确实有帮助：晒太阳、活动身体能改善睡眠，也能让大脑从反复的念头里暂时出来。不用强求，先从下楼走十分钟开始也可以。",
       "心情低落时散步运动真的有用吗？",
       ("我连出门的力气都没有。",
        "那就从更小的事开始：拉开窗帘、洗把脸、在阳台站两分钟。没有力气本身就是需要关注的信号。如果很多天都这样，请告诉家人或老师，一起去寻求专业帮助。",
        "心情低落到连出门的力气都没有，怎么办？"))])

tree("zh-major-choice", "zh", "counselling",
     ["高考志愿我想学美术，爸妈坚持让我学计算机，怎么办？",
      "选专业和父母意见不一样，我想学美术，他们说没前途，非要我学计算机。"],
     "这种分歧很常见，双方其实都在为你的未来着想。与其争论谁对谁错，不如一起收集信息：这两个专业学什么、就业方向、你在哪方面更有优势。用事实沟通，比情绪对抗更有效。",
     "选专业和父母意见不一致怎么办？",
     [("信息该去哪里查比较靠谱？",
       "可以看目标大学官网的培养方案和课程表，查往届毕业生去向报告；再找正在读这个专业的学长学姐聊聊。把整理好的资料给父母看，比口头说服更有说服力。",
       "了解大学专业信息该去哪里查？",
       ("我查了以后发现自己也有点犹豫了。",
        "犹豫说明你在认真思考，这是好事。可以把两个专业的优缺点写成表格，问问自己：四年里每天学这些内容，我能坚持吗？也可以看看有没有兼顾的方向，比如数字媒体、交互设计。",
        "了解专业后反而犹豫不决，怎么办？")),
      ("如果怎么沟通他们都不同意呢？",
       "可以试着找一个中间方案，或者请班主任、升学指导老师一起参与讨论。也要知道，专业不是一辈子的定局，大学里还有辅修、转专业、考研等机会。",
       "父母怎么沟通都不同意我的专业选择怎么办？",
       ("这件事让我压力很大，天天失眠。",
        "临近志愿填报，压力大很正常。每天给这件事留固定的时间处理，其余时间照常作息。睡前别讨论这个话题。如果失眠持续超过两周，记得告诉家人，也可以找学校心理老师聊聊。",
        "填报志愿压力很大导致失眠怎么办？")),
      ("我怕选错专业后悔一辈子。",
       "这个担心很能理解，不过很少有一个选择能决定一辈子。很多人工作的领域和本科专业并不完全一致。选一个你能投入、也有一定基础的方向，之后还可以不断调整。",
       "担心选错专业后悔一辈子怎么办？",
       ("那怎么判断自己是真的喜欢，还是一时兴趣？",
        "看看你是否愿意为它做枯燥的部分：比如美术要长期练基础，计算机要反复调试代码。可以利用暑假上一门入门课或做个小项目，亲身试过之后会更清楚。",
        "怎么判断自己是真的喜欢一个专业？"))])

tree("zh-excluded", "zh", "counselling",
     ["班上几个同学建了小群，故意不拉我，我感觉被孤立了。",
      "被同学排挤了，她们说话故意避开我，我该怎么办？"],
     "被排除在外的感觉很伤人，你难过是正常的。先别急着认定是自己不好。可以观察一下是不是有误会，也可以多和班上其他同学相处。如果有嘲笑、散布谣言等行为，请告诉老师。",
     "在班上被同学孤立怎么办？",
     [("要不要直接去问她们为什么不拉我？",
       "如果其中有关系还不错的，可以私下平静地问：“最近感觉你们有点疏远我，是我哪里做得不好吗？”不要当着一群人问。对方的回答能帮你判断是误会还是别的原因。",
       "感觉被朋友疏远，要不要直接问原因？",
       ("她说“没什么啊”，但态度还是很冷淡。",
        "那就不必追问下去，你已经表达了善意。把精力放到愿意和你相处的人身上。友谊有时会自然变化，这不完全取决于你。",
        "问朋友为什么疏远，对方说没什么，态度还冷淡怎么办？")),
      ("她们还在背后说我坏话，这算校园欺凌吗？",
       "反复散布谣言、故意孤立、嘲笑，属于关系型欺凌。建议把具体情况记录下来，包括时间、内容、截图，然后告诉班主任和家长。你不需要一个人忍受这些。",
       "被同学在背后说坏话、故意孤立，算校园欺凌吗？",
       ("我怕告诉老师以后她们会变本加厉。",
        "这个顾虑很正常。可以请老师私下处理，不点名是你反映的；也可以让家长一起和老师沟通。学校有责任保护你的安全，情况一般会比你一个人硬扛好得多。",
        "怕告诉老师后被欺负得更厉害，怎么办？")),
      ("我现在一到学校就胃疼，不想去上学。",
       "身体的不舒服可能和压力有关，这是一个需要认真对待的信号。请告诉家长你在学校的遭遇，先去医院排除身体原因，再一起找老师或心理老师想办法。",
       "一到学校就胃疼、不想上学，怎么办？",
       ("家长会不会觉得我在找借口不上学？",
        "可以把事情按时间顺序讲清楚，或者把记录给他们看，让他们了解你经历了什么。如果担心他们不理解，可以先找心理老师，请老师帮你和家长沟通。",
        "怕父母觉得我不想上学是找借口，怎么说？"))])

tree("zh-compare-self", "zh", "counselling",
     ["看到同学又拿奖又考高分，我总觉得自己一无是处。",
      "刷朋友圈看到别人都很优秀，我就很焦虑，觉得自己很差。"],
     "这种感受很多人都有。我们看到的往往是别人的“高光时刻”，却拿它来比自己的日常，当然会觉得落后。可以少做这种比较，比如减少刷动态的时间，把注意力放回自己可以掌控的小目标上。",
     "总拿自己和优秀的同学比，觉得自己一无是处，怎么办？",
     [("可他们确实比我优秀啊，这不是事实吗？",
       "他们可能在某些方面确实更强，这是事实；但“我一无是处”是一个被情绪放大的结论。每个人的起点、节奏和擅长的领域都不一样。试着写下自己的三个优点，哪怕很小。",
       None,
       ("我想了半天，一个优点都写不出来。",
        "这恰恰说明你对自己太严格了。可以问问好朋友或家人：“你觉得我有哪些优点？”别人眼中的你，往往比你自己想的要好。写不出来时，也可以从“我做过的一件好事”开始。",
        "想写自己的优点，却一个都写不出来，怎么办？")),
      ("我也想努力追上，但总是三天打鱼两天晒网。",
       "可以把目标定得小而具体，比如“每天背10个单词”，而不是“要变得很优秀”。用日历打勾记录，断了一天没关系，第二天接着来就好。坚持的秘诀是容易开始。",
       "总是三天打鱼两天晒网，怎么坚持学习？",
       ("断了好几天以后就不想再开始了。",
        "这叫“全或无”思维：觉得断了就前功尽弃。其实之前的积累都还在。告诉自己“从今天重新算第一天”，先完成一个最小的量，哪怕只背3个单词。",
        "学习计划中断几天后就不想重新开始，怎么办？")),
      ("减少刷朋友圈？可是不看又怕错过消息。",
       "不用完全不看，可以给自己定个时间，比如晚饭后看十分钟。重要的消息通常会私聊你。你也可以留意一下：每次刷完是更开心还是更焦虑，再决定怎么调整。",
       "减少刷社交媒体又怕错过消息，怎么办？",
       ("试了几天，确实焦虑少了一点。",
        "太好了，你已经找到一个对自己有用的方法。可以继续保持，同时把省下来的时间用在让你有成就感的事上，比如运动或一个小爱好。慢慢你会更多看到自己的成长。",
        None))],
     split="test")
# ---------------------------------------------------------------------------
# English · supportive counselling for young people / students
# ---------------------------------------------------------------------------

tree("en-mock-exams", "en", "counselling",
     ["My mock exams start next week and I feel sick every time I open a textbook. What can I do?",
      "I'm panicking about mocks next week. I can't even start revising."],
     "That dread is a normal stress response, and it usually eases once you start. "
     "Try a tiny first step: pick one topic, set a timer for 20 minutes, and just make notes. "
     "Then take a short break. Starting small beats waiting until you feel ready.",
     "How do I start revising when exam stress makes me feel sick?",
     [("What should I pick first, the subject I'm worst at?",
       "Not necessarily. Start with something medium so you build momentum, then tackle a weak topic when your energy is highest, often in the morning. "
       "Mix in past papers early; they show you what actually comes up.",
       "Which subject should I revise first when I'm stressed?",
       ("Past papers scare me because I get so many wrong.",
        "Getting questions wrong now is the whole point: it shows you exactly what to fix before the real exam. "
        "Mark them with the mark scheme, note each mistake in one line, and redo those questions a few days later.",
        "Past papers scare me because I get lots wrong. How should I use them?")),
      ("How many hours a day should I be revising?",
       "Quality matters more than hours. For most students, three to five focused hours with breaks is plenty during a revision week. "
       "Keep sleep, meals and a bit of movement in your day; a tired brain remembers far less.",
       "How many hours a day should I revise before exams?",
       ("My friends say they're doing ten hours and I feel lazy.",
        "People often exaggerate revision hours, and ten hours usually includes a lot of scrolling. "
        "Compare yourself with your own plan, not their claims. If you finish your planned topics, that's a good day.",
        "Friends claim they revise ten hours a day and I feel lazy. Is that normal?")),
      ("What if I panic in the actual exam?",
       "Have a plan ready: put the pen down, breathe out slowly a few times, and press your feet into the floor. "
       "Then read the next question and start with the part you know. Panic peaks and passes within a minute or two.",
       "What should I do if I panic during an exam?",
       ("This happens in every exam, not just mocks. Is that a problem?",
        "Some nerves are normal, but if panic regularly stops you finishing papers, it's worth talking to your school counsellor or GP. "
        "They can help with anxiety strategies and sometimes arrange exam support like a quieter room.",
        "I panic in every exam. Should I get help?"))])

tree("en-friend-drift", "en", "counselling",
     ["My best friend has started hanging out with a new group and barely talks to me.",
      "I think my best friend is drifting away from me. How do I handle it?"],
     "That hurts, especially when you were close. Friendships often shift when people join new classes or clubs, and it doesn't always mean they care less. "
     "You could reach out with something low-pressure, like inviting them to something you both used to enjoy.",
     "My best friend is drifting away and hanging out with a new group. What should I do?",
     [("Should I tell them I feel left out?",
       "Yes, if you can keep it calm and about your feelings: \"I've missed hanging out lately. Is everything okay between us?\" "
       "Pick a private moment, not a group chat. Most people respond better to honesty than to hints or silence.",
       "Should I tell my friend that I feel left out?",
       ("What if they say nothing's wrong but keep ignoring me?",
        "Then you've done your part. Give it some time and invest in other friendships too. "
        "People can grow apart without anyone being the bad guy, and it's okay to grieve that a little.",
        "My friend says nothing's wrong but keeps ignoring me. What now?")),
      ("Could I just join their new group too?",
       "You could, if you genuinely like those people. Say hi, join a lunch now and then, and see how it feels. "
       "Just don't force it only to keep one friendship; you deserve a place where you feel welcome.",
       "Should I try to join my friend's new friend group?",
       ("I tried once and felt really awkward.",
        "One awkward lunch is normal; new groups take a few tries. Ask people simple questions about themselves and listen. "
        "If it still feels uncomfortable after a few weeks, that's useful information too.",
        "I tried joining a new friend group and felt awkward. Is that normal?")),
      ("I don't really have other friends. That's why this is so scary.",
       "That makes it understandably frightening. It might help to widen your circle a bit: a club, a sports team, a class project partner. "
       "You don't need a new best friend straight away, just a few people you're comfortable with.",
       "I'm scared of losing my only close friend. How can I make new friends?",
       ("How do I make friends when I'm shy?",
        "Shared activities do the heavy lifting, so pick something you'd enjoy anyway. "
        "Show up regularly, because familiarity builds friendship. Start with small questions like \"How did you find the homework?\" and follow up next time.",
        "How do I make friends when I'm shy?"))])

tree("en-late-nights", "en", "counselling",
     ["I stay up until 2am on my phone every night and then I'm exhausted at school.",
      "How do I stop scrolling so late? I'm always tired in class."],
     "Late-night scrolling is really common, because the phone is designed to keep you going. "
     "Try setting a fixed \"phone down\" time an hour before bed and charging it outside your room. "
     "A paper book or music can fill the gap while your brain winds down.",
     "How do I stop scrolling on my phone late at night?",
     [("But I use my phone as an alarm.",
       "A cheap alarm clock solves that. If that's not possible, put the phone across the room on silent with only the alarm on. "
       "Getting out of bed to switch it off also helps you actually wake up.",
       None,
       ("Even without the phone I lie awake for ages.",
        "That's common when your body clock has shifted late. Get up at the same time every day, even weekends, and get daylight in the morning. "
        "If you can't sleep after twenty minutes, get up and do something calm until you feel sleepy.",
        "I lie awake for ages even without my phone. What can I do?")),
      ("Scrolling is the only time I get to relax, though.",
       "That's worth taking seriously. If your day is packed, your brain grabs rest wherever it can. "
       "Could you move some of that relaxing to earlier, like thirty minutes after dinner? Then bedtime doesn't have to be your only free time.",
       None,
       ("My schedule is full of homework and training.",
        "Then it might help to look at your week honestly with a parent or teacher. Sometimes one commitment needs to be trimmed. "
        "Rest isn't laziness; you learn and perform better when you're not running on empty.",
        "My schedule is packed with homework and training and I have no time to rest. What should I do?")),
      ("How much sleep do teenagers actually need?",
       "Most teenagers need around eight to ten hours a night. Your body clock also naturally shifts later during adolescence, which is why early mornings feel brutal. "
       "A consistent wake-up time helps the most.",
       "How much sleep do teenagers need?",
       ("Can I just catch up on sleep at the weekend?",
        "A little extra helps, but sleeping until noon shifts your body clock and makes Monday harder. "
        "Try to wake within an hour or two of your weekday time, and add a short early-afternoon nap if you need it.",
        "Can teenagers catch up on sleep at the weekend?"))])

tree("en-parents-arguing", "en", "counselling",
     ["My parents argue a lot and I can hear everything from my room. I can't focus on anything.",
      "It's really tense at home because my parents keep fighting. How do I cope?"],
     "I'm sorry, that sounds really stressful. It's important to know their arguments are not your fault or your job to fix. "
     "In the moment, headphones, a walk or texting a friend can give you some space. Do you feel safe at home?",
     "How do I cope when my parents argue a lot?",
     [("Yes, I'm safe. It's just shouting, but it's constant.",
       "Thanks for telling me. Constant shouting still wears you down, so your feelings are valid. "
       "Try to build calm spots into your day: the library after school, a hobby, time with a friend. Having somewhere to recharge really helps.",
       None,
       ("Should I say something to my parents about it?",
        "If you feel able to, choose a calm moment with one parent and describe the effect on you: \"When you argue, I can't sleep or concentrate.\" "
        "You're not asking them to fix their relationship, just letting them know how it affects you.",
        "Should I tell my parents that their arguing affects me?")),
      ("I feel like I have to take sides.",
       "That's a heavy position to be in, and you don't have to accept it. You can love both parents without choosing. "
       "It's fine to say, \"I don't want to be in the middle of this.\" A school counsellor can help you find words for that.",
       "I feel pressured to take sides when my parents fight. What can I do?",
       ("What if they keep dragging me into it anyway?",
        "Then it's a good time to involve another trusted adult, like a relative, teacher or school counsellor. "
        "They can support you and, if needed, talk with your parents. You deserve to be a kid, not a referee.",
        "My parents keep dragging me into their arguments. Who can help?")),
      ("What if they're going to get divorced?",
       "That fear makes complete sense. Nobody can predict that, and worrying about it now won't change it. "
       "If it does happen, lots of young people find life settles and even gets calmer. You could ask your parents directly if you need to know.",
       "I'm scared my parents are going to get divorced. How do I handle that fear?",
       ("I can't stop thinking about it at night.",
        "Night-time worry is hard to switch off. Try writing the worry down before bed with one thing you can do about it tomorrow. "
        "If it's affecting your sleep for weeks, please talk to a school counsellor or your doctor.",
        "I keep worrying about my family at night and can't sleep. What helps?"))])

tree("en-homesick-uni", "en", "counselling",
     ["I just started university and I'm so homesick I want to drop out.",
      "First month at uni and I cry most nights because I miss home. Is this normal?"],
     "It's very normal, and the first few weeks are usually the hardest. Homesickness tends to fade as routines form and friendships grow. "
     "Before making any big decision, give yourself until at least the end of the first term.",
     "I'm very homesick in my first month at university. Is that normal?",
     [("How do I build a routine when everything feels new?",
       "Anchor your day with a few fixed points: a regular wake-up time, meals at similar times, and one activity you repeat each week, like a society meeting or a gym class. "
       "Familiar rhythms make a new place feel like home faster.",
       "How do I build a routine when I start university?",
       ("I've joined one society but I still eat alone most days.",
        "That's a start, so well done. Try asking someone from the society if they want to grab food after a session; a small concrete invite is easier than a vague one. "
        "Halls common rooms and course study groups are good places too.",
        "I joined a society but still eat alone most days. How can I meet people?")),
      ("Should I go home every weekend?",
       "Going home occasionally is lovely, but going every weekend can make it harder to settle, because weekends are when a lot of friendships form. "
       "Maybe plan a visit home in a few weeks and give yourself something to look forward to.",
       "Should I go home every weekend when I'm homesick at university?",
       ("My mum keeps asking if I'm okay and it makes me cry more.",
        "That's understandable: her care reminds you of what you miss. You could agree on a regular call time, and talk about ordinary things too, not just how you're coping. "
        "It's okay to tell her what kind of support helps.",
        "My mum keeps asking if I'm okay and it makes my homesickness worse. What should I do?")),
      ("What if it doesn't get better?",
       "If you're still struggling a lot after several weeks, or it's affecting sleep, eating or attending lectures, please reach out to your university's wellbeing or counselling service. "
       "They see homesick students all the time and it's usually free.",
       "What if homesickness at university doesn't get better?",
       ("Isn't counselling only for serious problems?",
        "Not at all. University counsellors help with all sorts of things: homesickness, stress, friendships, motivation. "
        "Going early often stops small problems growing. Think of it like visiting a doctor for a sprain before it gets worse.",
        "Is university counselling only for serious problems?"))])

tree("en-presentation", "en", "counselling",
     ["I have to give a five-minute presentation in class and I'm dreading it.",
      "Public speaking terrifies me and I've got a class presentation on Friday."],
     "Feeling nervous before presenting is incredibly common, even for confident people. "
     "The best antidote is practice: run through it out loud three or four times, ideally once in front of someone. "
     "Knowing your first two sentences by heart makes starting much easier.",
     "How do I prepare for a class presentation when I'm nervous?",
     [("Should I memorise the whole thing word for word?",
       "Usually not. If you lose one word, a memorised script can fall apart. Instead, learn your opening and closing lines, and use short bullet points for the middle. "
       "That keeps you natural and easier to follow.",
       "Should I memorise my presentation word for word?",
       ("What if I forget what comes next?",
        "Pause, glance at your notes and take a breath. A two-second pause feels huge to you but looks completely normal to the audience. "
        "You can even say, \"Let me check my notes,\" which is perfectly fine.",
        "What should I do if I forget what comes next in a presentation?")),
      ("My hands shake and my voice goes wobbly.",
       "That's adrenaline, and it's harmless. Hold your notes in both hands or rest them on a desk, and speak a little slower than feels natural. "
       "A slow breath out before you start calms the body more than a deep breath in.",
       "My hands shake and my voice wobbles when I present. What helps?",
       ("Will people actually notice that I'm shaking?",
        "Far less than you think. Audiences mostly notice whether they can follow your ideas. "
        "Research on the \"spotlight effect\" shows we overestimate how much others notice our nerves. Most classmates will just be glad it's not their turn.",
        "Will the audience notice that I'm nervous when presenting?")),
      ("Can I ask my teacher to let me present just to her?",
       "You can ask, and some teachers will agree, especially if anxiety is significant. "
       "It might be even better to ask for a step in between, like presenting to a small group first. Facing it gradually helps the fear shrink.",
       "Can I ask my teacher if I can present privately because of anxiety?",
       ("How do I bring it up without sounding like I'm making excuses?",
        "Be honest and specific: \"I get really anxious speaking to the whole class. Could I present to a smaller group first, and build up?\" "
        "Asking for help to do something is very different from trying to avoid it.",
        "How do I ask my teacher for help with presentation anxiety?"))])

tree("en-perfectionism", "en", "counselling",
     ["I keep rewriting the first paragraph of my essay and now it's due tomorrow.",
      "Perfectionism means I never finish on time, and now an essay is due tomorrow. How do I break the cycle?"],
     "Perfectionism often looks like procrastination: it's hard to start when only perfect will do. "
     "For tonight, aim for a messy complete draft. Write each section quickly without editing, then spend the last hour improving it. "
     "A finished essay beats a perfect paragraph.",
     "How do I stop perfectionism from making me miss deadlines?",
     [("Writing badly on purpose feels wrong.",
       "It's not writing badly on purpose, it's separating writing from editing. Your brain can't do both well at once. "
       "Professional writers draft roughly too; the quality comes in revision.",
       None,
       ("How do I know when it's good enough to submit?",
        "Check it against the marking criteria: does it answer the question, have a clear argument, and use evidence? "
        "If yes, do one read for typos and submit. Beyond that point, extra polishing rarely changes the grade.",
        "How do I know when an essay is good enough to submit?")),
      ("Why do I do this every single time?",
       "Often perfectionism is protection: if you never finish, nobody can judge your best effort. "
       "It can also come from high pressure at home or school. Noticing the pattern, as you're doing now, is the first step to changing it.",
       "Why do perfectionists procrastinate?",
       ("Is it worth talking to someone about it?",
        "Yes, especially if it's causing lots of stress or missed deadlines. A school or university counsellor can help you work on the thinking behind it. "
        "Many students find a few sessions make a real difference.",
        "Should I talk to a counsellor about perfectionism?")),
      ("Could I just ask for an extension?",
       "You can, and it's worth asking if you're genuinely behind. Email your teacher today, not at midnight, explain briefly and suggest a new date. "
       "But also try the rough draft tonight, so you have something either way.",
       "Should I ask for an extension on an essay?",
       ("What should I write in the email?",
        "Keep it short and polite: \"I've been struggling to finish my essay and I'm worried about the quality. Would it be possible to have until Friday?\" "
        "Teachers appreciate early, honest requests much more than last-minute ones.",
        "How do I write an email asking a teacher for an extension?"))])

tree("en-burnout", "en", "counselling",
     ["I feel burnt out. I'm tired all the time and nothing I do feels good enough.",
      "I'm exhausted from school and I've stopped enjoying anything. What's going on with me?"],
     "That sounds draining, and I'm glad you said it out loud. Long stretches of pressure without real rest can leave you empty like this. "
     "Small steps help: protect your sleep, eat regularly, and add one thing each week that's just for fun.",
     "I feel burnt out from school and tired all the time. What can I do?",
     [("I don't have time for fun stuff.",
       "Even ten minutes counts: a walk, a song you love, drawing, a call with a friend. Rest isn't a reward for finishing everything; it's what lets you keep going. "
       "Try scheduling it like homework.",
       None,
       ("What if I still feel empty after resting?",
        "If you feel flat, hopeless or uninterested in almost everything for more than a couple of weeks, please talk to a doctor or school counsellor. "
        "That can be a sign of depression, which is very treatable with the right support.",
        "What if I still feel empty and tired even after resting?")),
      ("Everyone else seems to manage. Why can't I?",
       "Lots of people are quietly struggling too; you only see their outsides. Also, everyone's load is different: commute, family, jobs, health. "
       "Struggling doesn't mean you're weak, it means you're carrying a lot right now.",
       "Everyone else seems to cope with school except me. Why?",
       ("How can I carry less?",
        "List everything on your plate, then mark what truly matters this month. Drop or delay one thing, even a small one. "
        "A teacher, tutor or parent can help you negotiate deadlines or commitments.",
        "How can I reduce my workload when I feel overwhelmed?")),
      ("Sometimes I think everyone would be better off without me.",
       "I'm really glad you told me. That thought matters, and you deserve support right now. "
       "Please talk to someone you trust today, a parent, teacher or counsellor. If you feel you might act on it, contact emergency services or a crisis line immediately.",
       None,
       ("I'm not going to do anything, I just feel like a burden.",
        "Thank you for being clear. Feeling like a burden is painful, and it's often depression talking rather than the truth. "
        "Please book a chat with a doctor or counsellor this week. People around you would want to know and help.",
        None))])

tree("en-group-chat", "en", "counselling",
     ["Some people in my class made a group chat without me and they joke about me in it.",
      "I found out my classmates have a group chat where they make fun of me."],
     "I'm sorry, that's hurtful, and it isn't your fault. Being mocked in a group chat is a form of bullying. "
     "If you've seen messages, take screenshots with dates. Then tell a trusted adult, like a parent or teacher, so they can help.",
     "My classmates make fun of me in a group chat. What should I do?",
     [("Should I reply to them or confront them?",
       "It's usually better not to reply. Responding online often gives them more to react to and can escalate things. "
       "Keep the evidence, block if needed, and let an adult help handle it through the school.",
       "Should I confront people who mock me online?",
       ("What will the school actually do?",
        "Most schools have an anti-bullying policy, which usually includes talking with the students involved, contacting parents, and checking in with you afterwards. "
        "You can ask your teacher what steps they'll take and how they'll keep you safe.",
        "What will my school do if I report online bullying?")),
      ("It makes me feel like there's something wrong with me.",
       "That's a very common reaction to being bullied, but their behaviour says more about them than you. "
       "Think about people who do treat you well, and spend time with them. Talking to a counsellor can also help rebuild confidence.",
       None,
       ("I don't really have anyone who treats me well at school.",
        "That sounds lonely. It's worth looking beyond your class: clubs, online communities for your hobbies, or people in other year groups. "
        "A school counsellor can also help you find groups where you'd be welcome.",
        "I don't have anyone at school who treats me well. Where can I find friends?")),
      ("I'm worried telling a teacher will make it worse.",
       "That's a real worry. You can ask the teacher to keep your name out of it and to handle it discreetly. "
       "Telling a parent first can help too, so they can speak to the school with you.",
       "I'm worried that reporting bullying will make it worse. What can I do?",
       ("What if the teacher doesn't take it seriously?",
        "Then go to someone else: the head of year, a school counsellor, or your parents can contact the head teacher. "
        "Keep your screenshots. You have a right to feel safe at school, and you can keep asking until someone listens.",
        "What if a teacher doesn't take my bullying report seriously?"))])

tree("en-failed-exam", "en", "counselling",
     ["I failed my chemistry exam and I'm scared to tell my parents.",
      "Just got my chemistry result back. I failed, and I don't know how to tell my mum and dad."],
     "That's a tough moment, and being scared is understandable. One result doesn't define you. "
     "It often helps to tell them sooner rather than later, and to come with a plan: what went wrong and what you'll try next time.",
     "I failed an exam and I'm scared to tell my parents. What should I do?",
     [("How do I figure out what went wrong?",
       "Go through the paper question by question and sort mistakes into groups: didn't know the content, misread the question, or ran out of time. "
       "Each group needs a different fix, so this turns a vague failure into a clear plan.",
       "How do I figure out what went wrong in an exam I failed?",
       ("Most of mine were 'didn't know the content'.",
        "Then the fix is steady content review. Ask your teacher which topics matter most, make short notes for each, and test yourself with practice questions every few days. "
        "Spaced practice sticks far better than cramming.",
        "I failed mostly because I didn't know the content. How should I study?")),
      ("My dad gets really angry about grades.",
       "That makes it harder. You could tell your mum or another adult first and ask them to be there. "
       "Choose a calm time, not right before bed or dinner. If you ever feel unsafe at home because of anger, please tell a teacher or counsellor.",
       None,
       ("What should I actually say?",
        "Something simple: \"I got my chemistry result and I failed. I'm disappointed too. I've looked at why, and here's what I'm going to do.\" "
        "Showing you've taken it seriously often softens the reaction.",
        "What should I say when telling my parents I failed an exam?")),
      ("I studied a lot and still failed. What's the point?",
       "That's really discouraging, and it's okay to feel gutted for a bit. Sometimes it's the way we study that needs changing, not the amount. "
       "Rereading notes feels productive but testing yourself works much better.",
       "I studied a lot and still failed. Why?",
       ("What does testing yourself look like?",
        "Close the book and write down everything you remember, then check what you missed. Use flashcards, past questions, or explain a topic aloud to someone. "
        "It feels harder than rereading, which is exactly why it works.",
        "What does self-testing look like when studying?"))],
     split="test")
# ---------------------------------------------------------------------------
# 中文 · LoRA 微调问答
# ---------------------------------------------------------------------------

tree("zh-rank-alpha", "zh", "lora",
     ["LoRA 里的 r 和 lora_alpha 到底怎么选？",
      "刚开始用 LoRA，r 和 alpha 应该设多少比较合适？"],
     "r 是低秩矩阵的秩，决定可训练参数量；lora_alpha 用来缩放更新，实际缩放系数是 alpha/r。常见起点是 r=16、alpha=16 或 32。数据少、任务简单用 8~16，任务复杂再加到 32~64。",
     "LoRA 的 r 和 lora_alpha 怎么选？",
     [("为什么很多人把 alpha 设成 r 的两倍？",
       "这是个经验做法：alpha=2r 时缩放系数固定为 2，改 r 时更新幅度不会跟着变小，学习率就不用大幅重调。它不是硬性规则，alpha=r 也很常见。",
       "为什么 LoRA 的 alpha 常设成 r 的两倍？",
       ("那经常听到的 rsLoRA 又是怎么回事？",
        "rsLoRA 把缩放从 alpha/r 改成 alpha/√r。原来的缩放在 r 很大时会让更新过小、学习变慢，rsLoRA 让大 rank 也能稳定学习。PEFT 里设 use_rslora=True 即可。",
        "rsLoRA 是什么？和普通 LoRA 有什么区别？")),
      ("r 设得越大效果就越好吗？",
       "不一定。r 越大参数越多，但数据量小时容易过拟合，显存和速度开销也会上升。很多指令微调任务里 r=16 和 r=64 差距很小，建议先小后大，看验证集再调。",
       "LoRA 的 rank 设得越大效果越好吗？",
       ("怎么判断是不是过拟合了？",
        "看验证集 loss：训练 loss 持续下降、验证 loss 却开始上升，就是过拟合的信号。也可以抽几条样本人工看生成结果，出现死记硬背训练集答案也说明过拟合了。",
        "微调时怎么判断模型过拟合了？")),
      ("r=16 大概会增加多少可训练参数？",
       "对一个 d×k 的权重矩阵，LoRA 增加 r×(d+k) 个参数。比如 4096×4096 的 q_proj，r=16 时约 13.1 万个参数。一般 7B/8B 模型把全部线性层都加上，总量约占 0.5% 左右。",
       "LoRA r=16 会增加多少可训练参数？",
       ("这么少的参数真能学会新东西吗？",
        "能学会风格、格式和特定任务，这正是 LoRA 擅长的。但要注入大量新知识，效果通常不如全参微调或继续预训练。可以把 LoRA 理解为“调教”而不是“重新教”。",
        "LoRA 参数这么少，能学会新知识吗？"))])

tree("zh-target-modules", "zh", "lora",
     ["做指令微调时，target_modules 只选 q_proj 和 v_proj 够吗？",
      "LoRA 的 target_modules 应该选哪些层？"],
     "原始 LoRA 论文只在 q_proj、v_proj 上加适配器，也有效果。但 QLoRA 论文发现给所有线性层加 LoRA，才能接近全参微调的效果。现在常用做法是选 q/k/v/o_proj 加 gate/up/down_proj。",
     "LoRA 的 target_modules 应该选哪些层？",
     [("PEFT 里的 \"all-linear\" 是什么意思？",
       "target_modules=\"all-linear\" 会自动匹配模型里所有线性层，但不包括输出层 lm_head。这样不用手动写模块名，换模型也不容易写错。",
       "PEFT 的 target_modules=\"all-linear\" 是什么意思？",
       ("那 lm_head 和 embedding 要不要训练？",
        "一般不用。只有需要新增 token，或者做继续预训练、学新语言时，才考虑训练 embed_tokens 和 lm_head，通常用 modules_to_save 全量训练它们，显存会明显增加。",
        "LoRA 微调时要不要训练 lm_head 和 embedding？")),
      ("全部线性层都加上，显存会多很多吗？",
       "LoRA 参数本身很小，多加几个模块通常只多几十到几百 MB。真正占显存的是基座权重和激活值。所以大多数情况下，全线性层的收益大于它带来的开销。",
       "LoRA 加在所有线性层上显存会增加很多吗？",
       ("怎么知道一个模型的模块名叫什么？",
        "print(model) 就能看到结构，也可以遍历 model.named_modules() 找线性层。Llama、Qwen、Mistral 基本都用 q_proj、k_proj、v_proj、o_proj、gate_proj、up_proj、down_proj。",
        "怎么查看模型里线性层的模块名？")),
      ("如果只在 MLP 层加 LoRA，行不行？",
       "可以试，有些实验显示 MLP 层对效果贡献很大，因为大部分参数都在那里。但只加注意力或只加 MLP 一般都不如全加。资源够的话，直接全线性层最省心。",
       "LoRA 只加在 MLP 层可以吗？",
       ("如果显存实在不够，先砍哪一部分？",
        "优先降低 max_seq_length 和 batch size，再开梯度检查点，而不是减少 target_modules。这几项省下的激活显存，远比少训练几个 LoRA 模块多。",
        "微调显存不够时应该先调整哪些参数？"))])

tree("zh-qlora-nf4", "zh", "lora",
     ["QLoRA 和普通 LoRA 有什么区别？",
      "听说 QLoRA 能省很多显存，它是怎么做到的？"],
     "QLoRA 把冻结的基座模型量化成 4-bit NF4 存储，计算时再反量化成 bf16/fp16；LoRA 适配器本身仍是 16-bit 训练。这样 7B 模型的权重只占约 4~5GB，消费级显卡也能微调。",
     "QLoRA 和普通 LoRA 有什么区别？",
     [("NF4 和普通 int4 有什么不同？",
       "NF4(NormalFloat4)的 16 个量化点按正态分布的分位数排列，而预训练权重大致呈正态分布，所以同样 4-bit 下信息损失更小。普通 int4 的量化点是均匀分布的。",
       "NF4 和普通 int4 量化有什么不同？",
       ("QLoRA 里说的双重量化又是什么？",
        "4-bit 量化需要为每个小块保存缩放常数，双重量化就是把这些常数再量化一次。按 QLoRA 论文，平均每个参数能再省约 0.37 bit，65B 模型能省下约 3GB。",
        "QLoRA 的双重量化是什么？")),
      ("加载 4-bit 模型时，bnb_4bit_compute_dtype 应该设成什么？",
       "显卡支持 bf16（如 A100、H100、RTX 30/40 系）就设 torch.bfloat16；T4、V100 不支持 bf16，用 torch.float16。它决定反量化后矩阵乘法的精度，对速度和稳定性都有影响。",
       "QLoRA 的 bnb_4bit_compute_dtype 应该怎么设置？",
       ("用 Unsloth 的话这些要自己配吗？",
        "基本不用。FastLanguageModel.from_pretrained 里设 load_in_4bit=True，dtype 留 None 会自动检测显卡选择 bf16 或 fp16。也可以直接下载 Unsloth 预量化好的 bnb-4bit 模型，加载更快。",
        "用 Unsloth 做 QLoRA 需要手动配置量化参数吗？")),
      ("4-bit 训练出来的效果会比 16-bit 差很多吗？",
       "QLoRA 论文在多项基准上显示，NF4+双重量化的结果和 16-bit LoRA 基本持平。实际中差距通常很小，显存足够时用 16-bit LoRA 更稳，也略快一些。",
       "QLoRA 4-bit 微调效果会比 16-bit 差吗？",
       ("训练完要合并权重，直接合到 4-bit 模型上可以吗？",
        "不推荐。合并到量化权重上会再引入一次量化误差。更好的做法是加载 16-bit 基座再合并，Unsloth 里可以用 save_pretrained_merged(save_method=\"merged_16bit\")。",
        "QLoRA 训练后可以直接把 LoRA 合并到 4-bit 模型吗？"))])

tree("zh-lr-batch", "zh", "lora",
     ["LoRA 微调的学习率一般设多少？",
      "用 LoRA 训练时 learning_rate 要设多大？和全参微调一样吗？"],
     "LoRA 通常用 1e-4 到 2e-4，比全参微调常用的 1e-5 左右大一个数量级，因为可训练参数少，而且 B 矩阵从零初始化。配合 warmup 和线性或余弦衰减效果更稳。",
     "LoRA 微调的学习率一般设多少？",
     [("loss 一直震荡降不下去，是学习率太大吗？",
       "有可能。先把学习率减半试试，再检查有效 batch 是否太小：batch 太小梯度噪声大，也会震荡。另外确认数据格式和 chat 模板没问题，脏数据也会让 loss 不稳。",
       "LoRA 微调时 loss 一直震荡，可能是什么原因？",
       ("你说的有效 batch 具体是怎么算的？",
        "有效 batch = per_device_train_batch_size × gradient_accumulation_steps × GPU 数量。比如单卡 batch=2、累积 8 步，有效 batch 就是 16，每 16 条样本更新一次参数。",
        "有效 batch size 怎么计算？")),
      ("batch size 调大和梯度累积，效果一样吗？",
       "数学上基本等价，都是把多条样本的梯度平均后再更新。区别是梯度累积更省显存、但更慢。显存允许时尽量调大 batch，不够时再用梯度累积补足。",
       "增大 batch size 和使用梯度累积效果一样吗？",
       ("改了有效 batch 以后，学习率要跟着改吗？",
        "最好跟着调整。有效 batch 变大后，每步梯度更稳，可以适当提高学习率；变小则适当降低。LoRA 场景下变化不大时，保持 2e-4 左右通常也没问题。",
        "有效 batch 改变后学习率需要调整吗？")),
      ("一般训练几个 epoch 合适？",
       "几千条左右的指令数据，通常 1~3 个 epoch 就够了。epoch 太多容易过拟合，模型会背答案、泛化变差。建议留一部分验证集，每隔一定步数评估一次。",
       "LoRA 指令微调一般训练几个 epoch？",
       ("数据只有三百条，也这么训吗？",
        "数据很少时可以多训一两个 epoch，但要更注意过拟合：r 设小一点（如 8），学习率略降，并经常人工检查生成结果。三百条更适合学格式和风格，而不是知识。",
        "只有几百条数据时怎么做 LoRA 微调？"))])

tree("zh-label-mask", "zh", "lora",
     ["为什么微调时要把 prompt 部分的 label 设成 -100？",
      "labels 里的 -100 是什么意思？"],
     "PyTorch 的 CrossEntropyLoss 默认 ignore_index=-100，label 为 -100 的位置不计算损失。把系统提示和用户输入设为 -100，模型就只学习生成回答，不会浪费能力去拟合用户的提问。",
     "微调时为什么要把 prompt 部分的 label 设成 -100？",
     [("多轮对话的 labels 应该怎么排？",
       "常见做法是：所有 system 和 user 轮都设 -100，每一轮 assistant 的回复都保留为真实 token id，包括结尾的结束符。这样一条多轮样本里每个回答都参与训练。",
       "多轮对话微调时 labels 应该怎么设置？",
       ("为什么结尾的结束符也要算进 loss？",
        "模型要学会什么时候停下来。如果把 <|im_end|> 或 eos 也遮掉，模型可能生成完回答后一直往下编，甚至自己续写下一轮 user。",
        "微调时为什么结束符 eos 也要计算 loss？")),
      ("在 Unsloth 里怎么只训练回答部分？",
       "用 unsloth.chat_templates 里的 train_on_responses_only 包装 trainer，传入模板中 user 和 assistant 的开头字符串（instruction_part、response_part），它会把回答以外的 token 都设为 -100。",
       "Unsloth 中怎么设置只对回答部分计算 loss？",
       ("怎么确认遮罩真的生效了？",
        "取一条样本，把 labels 里不等于 -100 的 token 解码出来看看，应该只剩 assistant 的回答。也可以统计被遮掉的比例，如果是 0% 或 100%，多半是模板字符串没匹配上。",
        "怎么检查 label 遮罩是否正确生效？")),
      ("不做遮罩，直接对整段算 loss 会怎样？",
       "也能训练，但一部分梯度花在预测用户提问上，回答质量可能略差，短回答数据尤其明显。有研究发现指令较长、回答较短时，对整段算 loss 有时反而有帮助，可以做对比实验。",
       "微调时不遮罩 prompt、对整段计算 loss 会怎样？",
       ("TRL 的 SFTTrainer 能直接设置吗？",
        "较新版本可以：对话格式数据在 SFTConfig 里设 assistant_only_loss=True，前提是 chat 模板支持生成 assistant 掩码；prompt-completion 格式默认就只在 completion 上算 loss。",
        "TRL 的 SFTTrainer 怎么只在回答部分计算 loss？"))])

tree("zh-gguf", "zh", "lora",
     ["训练完的 LoRA 模型怎么导出成 GGUF 给 llama.cpp 用？",
      "想把微调好的模型放到 Ollama 里跑，要怎么导出？"],
     "Unsloth 可以直接导出：model.save_pretrained_gguf(\"out\", tokenizer, quantization_method=\"q4_k_m\")。它会先把 LoRA 合并到 16-bit 权重，再调用 llama.cpp 转换和量化。",
     "微调后的 LoRA 模型怎么导出成 GGUF？",
     [("q4_k_m、q8_0、f16 这些怎么选？",
       "f16 基本无损但体积最大；q8_0 质量几乎一样，体积约一半；q4_k_m 体积约为 f16 的三分之一左右，质量损失不大，是本地部署最常用的折中。显存或内存紧张就选 q4_k_m。",
       "GGUF 的 q4_k_m、q8_0、f16 量化方式怎么选？",
       ("量化以后回答变差了怎么办？",
        "先用 q8_0 或 f16 对比，确认是不是量化造成的。如果 f16 也不好，问题多半在 chat 模板或停止符上。确认是量化问题的话，可以换更高精度的 q5_k_m 或 q6_k。",
        "GGUF 量化后模型回答变差了怎么办？")),
      ("不用 Unsloth，手动怎么转？",
       "先用 PEFT 的 merge_and_unload() 把 LoRA 合并进 16-bit 基座并保存；然后用 llama.cpp 的 convert_hf_to_gguf.py 转成 f16 GGUF；最后用 llama-quantize 量化成 q4_k_m。",
       "不用 Unsloth，怎么手动把模型转成 GGUF？",
       ("合并时显存不够怎么办？",
        "合并可以在 CPU 上做，加载时设 device_map=\"cpu\" 并用 bf16 或 fp16，8B 模型大约需要 16GB 以上内存。速度慢一些，但只需做一次。",
        "合并 LoRA 权重时显存不够怎么办？")),
      ("导入 Ollama 之后模型乱说话、停不下来。",
       "多半是模板问题。Modelfile 里的 TEMPLATE 要和训练时的 chat 模板一致，并设置正确的 stop 参数，比如 <|im_end|> 或 <|eot_id|>。Unsloth 导出时也能自动生成 Modelfile。",
       "微调模型导入 Ollama 后停不下来、乱说话，怎么解决？",
       ("怎么确认训练时用的是哪个模板？",
        "看 tokenizer.chat_template，或者用 apply_chat_template 把一条样本渲染成字符串打印出来，对照特殊 token 就清楚了。训练、评估、部署三处用同一个模板最重要。",
        "怎么确认微调时用的是哪个 chat 模板？"))])

tree("zh-t4-h100", "zh", "lora",
     ["在 Colab 的 T4 上能微调 8B 模型吗？",
      "只有一张 16GB 的 T4，能跑 Llama 3 8B 的微调吗？"],
     "可以，用 QLoRA。8B 模型 4-bit 权重约 5~6GB，再加上 LoRA、优化器状态和激活，在 max_seq_length=2048、batch=2 并开启梯度检查点时，16GB 的 T4 一般能放下，只是速度较慢。",
     "T4 显卡能微调 8B 模型吗？",
     [("T4 上为什么不能用 bf16？",
       "T4 是 Turing 架构，硬件不支持 bf16，只能用 fp16。bf16 从 Ampere（A100、RTX 30 系）开始才支持。所以 T4 上要设 fp16=True，并注意 fp16 训练可能出现溢出。",
       "T4 显卡为什么不能用 bf16 训练？",
       ("fp16 训练出现 loss 变 nan 怎么办？",
        "先降低学习率，确认开启了混合精度的 loss scaling（Trainer 设 fp16=True 会自动处理）。再检查数据里是否有超长或异常样本。实在不稳，可以试试把 max_grad_norm 设为 1.0 以下。",
        "fp16 训练时 loss 变成 nan 怎么办？")),
      ("如果换成 H100，训练会快多少？",
       "差距很大。H100 有 80GB 显存、支持 bf16 和 FlashAttention，算力是 T4 的十几倍以上。同样的 8B QLoRA 任务，T4 上要几个小时的，H100 上可能十几分钟就完成。",
       "H100 比 T4 微调快多少？",
       ("有了 H100 还需要用 4-bit 吗？",
        "8B 级别的模型不需要，80GB 足够直接跑 16-bit LoRA，速度更快也更准确。4-bit 在 H100 上更适合 70B 这类大模型，用 QLoRA 单卡就能微调。",
        "用 H100 微调还有必要用 4-bit 量化吗？")),
      ("T4 上训练出现 OOM 应该先调什么？",
       "按顺序试：batch 降到 1，用梯度累积补回有效 batch；缩短 max_seq_length；开启 use_gradient_checkpointing=\"unsloth\"；优化器换成 adamw_8bit。",
       "T4 上微调出现显存不足（OOM）怎么办？",
       ("max_seq_length 缩短会影响效果吗？",
        "如果数据大部分都比较短，就没有影响。可以先统计一下样本 token 长度分布，取覆盖 95% 样本的长度即可。超长样本会被截断，回答被截掉的部分模型就学不到。",
        "缩短 max_seq_length 会影响微调效果吗？"))])

tree("zh-dora-pissa", "zh", "lora",
     ["DoRA 和 PiSSA 是什么？比普通 LoRA 好吗？",
      "最近看到 DoRA、PiSSA 这些 LoRA 变体，它们分别改了什么？"],
     "两者都是 LoRA 的改进。DoRA 把权重拆成“幅度”和“方向”，用 LoRA 更新方向，幅度单独学习；PiSSA 用权重的主奇异值和奇异向量初始化 A、B，冻结剩下的残差部分。两者常常收敛更快、效果略好。",
     "DoRA 和 PiSSA 分别是什么？",
     [("如果想试试，PEFT 里怎么开启 DoRA？",
       "在 LoraConfig 里设 use_dora=True 就行，其余参数和 LoRA 一样。要注意 DoRA 训练会比 LoRA 慢一些、显存略多；推理前合并权重后就没有额外开销了。",
       "PEFT 中怎么开启 DoRA？",
       ("DoRA 能和 4-bit 量化一起用吗？",
        "可以，PEFT 支持在 bitsandbytes 4-bit 模型上用 DoRA，也就是常说的 QDoRA。不过速度开销会更明显，建议先在小数据上对比一下，确认收益值得。",
        "DoRA 能和 4-bit 量化一起使用吗？")),
      ("PiSSA 怎么用？初始化会不会很慢？",
       "在 LoraConfig 里设 init_lora_weights=\"pissa\"。完整 SVD 对大模型较慢，可以用 \"pissa_niter_4\" 这类快速 SVD，几秒到几十秒就能完成，效果接近。",
       "PiSSA 怎么使用？初始化慢怎么办？",
       ("PiSSA 保存的适配器能直接加载到原模型上吗？",
        "不能直接用，因为训练时基座已经被改成了残差模型。PEFT 提供了把 PiSSA 适配器转换成普通 LoRA 的方法：保存时传入 path_initial_model_for_weight_conversion，转换后就能加载到原始基座上。",
        "PiSSA 训练的适配器能直接加载到原始模型上吗？")),
      ("这么多变体，我平时应该默认用哪个？",
       "先用普通 LoRA 建立基线，它最稳定、生态支持最好。如果想在同样 rank 下多挤一点效果，再试 DoRA 或 PiSSA。用同一份验证集比较，别只看训练 loss。",
       "LoRA、DoRA、PiSSA 应该默认用哪个？",
       ("为什么不能只看训练 loss 比较？",
        "不同初始化和结构的 loss 起点和下降速度都不同，PiSSA 一开始 loss 就会更低。训练 loss 低也可能是过拟合。验证集 loss 加上实际生成效果评估才可靠。",
        "比较不同微调方法时为什么不能只看训练 loss？"))])

tree("zh-loftq-adalora", "zh", "lora",
     ["LoftQ 是做什么的？和 QLoRA 有什么关系？",
      "听说 LoftQ 能改善 QLoRA 的效果，原理是什么？"],
     "QLoRA 直接量化基座，量化误差会一直存在。LoftQ 在初始化时交替做量化和低秩分解，让“量化后的权重 + LoRA 初始值”尽量接近原始权重，相当于让 LoRA 一开始就补偿量化误差。",
     "LoftQ 是什么？和 QLoRA 有什么关系？",
     [("具体在 PEFT 里怎么使用 LoftQ？",
       "在 LoraConfig 里设 init_lora_weights=\"loftq\"，并传入 LoftQConfig(loftq_bits=4)，注意这时要用未量化的模型。也可以对已加载的 4-bit 模型调用 replace_lora_weights_loftq。",
       "PEFT 中怎么使用 LoftQ 初始化？",
       ("LoftQ 一定比普通 QLoRA 好吗？",
        "不一定。在 2-bit、3-bit 等低比特下优势明显；4-bit 下量化误差本身就小，提升通常有限。建议在自己的任务上对比验证集结果。",
        "LoftQ 一定比普通 QLoRA 效果好吗？")),
      ("AdaLoRA 也是初始化方法吗？",
       "不是。AdaLoRA 在训练中动态分配秩：用类似 SVD 的参数化，根据重要性分数裁剪不重要的奇异值，把秩预算分给更重要的层。总参数预算固定，但各层 rank 不同。",
       "AdaLoRA 是什么？",
       ("使用 AdaLoRA 的时候要设置哪些参数？",
        "主要是 init_r（初始秩）、target_r（目标平均秩），以及控制裁剪时间的 tinit、tfinal、deltaT。新版 PEFT 还要求提供 total_step，即总训练步数。",
        "AdaLoRA 需要设置哪些参数？")),
      ("这些方法 Unsloth 都支持吗？",
       "Unsloth 的 get_peft_model 直接支持 use_rslora，以及通过 loftq_config 使用 LoftQ。DoRA、PiSSA、AdaLoRA 等更常通过 PEFT 原生接口使用，具体以所用版本的文档为准。",
       "Unsloth 支持 rsLoRA、LoftQ 等 LoRA 变体吗？",
       ("这么多方法，那我应该先试哪个？",
        "如果用 4-bit 并且显存紧张，先试普通 QLoRA，再试 LoftQ 初始化；如果想用更大的 rank，打开 rsLoRA。一次只改一个变量，才能看清哪个改动真正有效。",
        "想改进 QLoRA 效果，应该先尝试哪种方法？"))],
     split="test")
# ---------------------------------------------------------------------------
# English · LoRA fine-tuning Q&A
# ---------------------------------------------------------------------------

tree("en-what-is-lora", "en", "lora",
     ["In simple terms, what does LoRA actually do during fine-tuning?",
      "Can you explain LoRA to someone who's only done full fine-tuning?"],
     "LoRA freezes the original weights and learns a small update for selected matrices. "
     "Instead of a full d x k update, it trains two thin matrices, B (d x r) and A (r x k), and adds their product, scaled by lora_alpha / r, to the frozen weight. "
     "Only A and B get gradients.",
     "What does LoRA do during fine-tuning?",
     [("Why is B initialised to zero?",
       "So that B times A is zero at the start, meaning the model begins exactly as the pretrained base. "
       "A gets a small random initialisation, and training moves B away from zero gradually. Without that, you'd inject random noise into the model on step one.",
       "Why is the LoRA B matrix initialised to zero?",
       ("Does that mean the first steps don't change anything?",
        "Not quite. The output is unchanged at step zero, but gradients still flow to B immediately because A is non-zero. "
        "After the first optimiser step, B is non-zero and the adapter starts contributing.",
        "If LoRA's B starts at zero, do the first training steps change anything?")),
      ("How much memory does this save compared with full fine-tuning?",
       "A lot, mainly in optimiser state. Full fine-tuning with AdamW keeps gradients plus two moment tensors for every parameter, often around 16 bytes per parameter in mixed precision. "
       "With LoRA those costs apply only to the adapter, usually well under 1% of parameters.",
       "How much memory does LoRA save compared with full fine-tuning?",
       ("So what still takes up most of the memory?",
        "The frozen base weights and the activations. An 8B model in bf16 is about 16 GB of weights alone, and activations grow with sequence length and batch size. "
        "That's why QLoRA and gradient checkpointing are the next tools to reach for.",
        "With LoRA, what uses most of the GPU memory?")),
      ("Is the result a separate file or a new model?",
       "By default you save only the adapter, typically tens to a few hundred megabytes. "
       "At inference you load the base model and attach the adapter, or merge it into the base weights to get a standalone model with no extra latency.",
       "After LoRA fine-tuning, do I get a separate adapter file or a new model?",
       ("Can I keep several adapters for one base model?",
        "Yes, that's one of LoRA's strengths. PEFT lets you load multiple named adapters and switch with set_adapter, and servers like vLLM can serve many LoRAs on one base. "
        "Just make sure each adapter was trained on that exact base model.",
        "Can I use several LoRA adapters with one base model?"))])

tree("en-dropout-overfit", "en", "lora",
     ["What value should I use for lora_dropout?",
      "Does lora_dropout matter much? I've seen 0, 0.05 and 0.1 in different recipes."],
     "It's a mild regulariser applied to the input of the LoRA branch. For large datasets or short runs, 0 is fine. "
     "For small datasets or several epochs, 0.05 to 0.1 can reduce overfitting a little. "
     "Unsloth's fast path is optimised for lora_dropout=0, so many of its recipes use that.",
     "What value should I use for lora_dropout?",
     [("My eval loss starts rising after the first epoch. Is dropout the fix?",
       "It might help slightly, but the bigger levers are fewer epochs, a lower learning rate, or more data. "
       "Rising eval loss while train loss falls is classic overfitting. Save checkpoints and keep the one with the best eval loss.",
       "My eval loss rises after the first epoch of LoRA training. How do I fix it?",
       ("How do I keep the best checkpoint automatically?",
        "In TrainingArguments or SFTConfig, set eval_strategy and save_strategy to the same value, for example \"steps\", plus load_best_model_at_end=True and metric_for_best_model=\"eval_loss\". "
        "save_total_limit keeps disk usage under control.",
        "How do I automatically keep the best checkpoint when fine-tuning?")),
      ("Does weight decay do the same job?",
       "Similar goal, different mechanism: weight decay pulls adapter weights toward zero, which keeps the update small. "
       "Values like 0.0 to 0.01 are common for LoRA. Neither replaces a validation set and early stopping.",
       "Is weight decay the same as lora_dropout for LoRA?",
       ("What does early stopping look like with the HF Trainer?",
        "Add EarlyStoppingCallback(early_stopping_patience=3) to the trainer's callbacks, with periodic evaluation and load_best_model_at_end=True. "
        "Training stops if eval loss doesn't improve for three evaluations in a row.",
        "How do I use early stopping with the Hugging Face Trainer?")),
      ("Why is Unsloth faster with dropout at 0?",
       "With no dropout, the LoRA computation is a plain matrix product that Unsloth can fuse into its custom kernels and backward pass. "
       "Non-zero dropout still works but falls back to a slower, more generic path.",
       "Why is Unsloth faster when lora_dropout is 0?",
       ("Then what else can I do against overfitting on a tiny dataset?",
        "Use a smaller rank like 8, train for one or two epochs, and lower the learning rate a bit. "
        "Deduplicate and diversify the data if you can. Most importantly, read some generations; memorised phrasing is easy to spot by eye.",
        "How do I avoid overfitting when fine-tuning on a tiny dataset?"))])

tree("en-rslora", "en", "lora",
     ["What is rsLoRA and when should I turn it on?",
      "Should I set use_rslora=True? What does it change?"],
     "rsLoRA changes the adapter scaling from lora_alpha / r to lora_alpha / sqrt(r). "
     "With the original scaling, larger ranks shrink the update and learn slowly; the sqrt version keeps learning stable as r grows. "
     "It matters most when you use ranks of 64 or more.",
     "What is rsLoRA and when should I use it?",
     [("If I switch it on, do I need to change lora_alpha?",
       "Usually yes, or at least recheck it. At r=16 and alpha=16, the scale goes from 1 to 4 with rsLoRA, so the effective step is larger. "
       "Either lower alpha or the learning rate, or start from a recipe tuned for rsLoRA.",
       "If I enable rsLoRA, should I change lora_alpha?",
       ("So what's a sensible rsLoRA starting point?",
        "One reasonable starting point is r=64 with lora_alpha around 16 (a scale of 2), and the usual 1e-4 to 2e-4 learning rate. "
        "Watch the first few hundred steps; if loss spikes, lower alpha or the learning rate.",
        "What are good starting hyperparameters for rsLoRA?")),
      ("Does rsLoRA cost extra memory or speed?",
       "No. It only changes a constant scaling factor, so the parameter count, memory and speed are identical to standard LoRA at the same rank. "
       "The cost comes from the higher rank you'll probably choose, not from rsLoRA itself.",
       "Does rsLoRA use extra memory or slow training down?",
       ("Is a higher rank actually worth it, then?",
        "Sometimes. For style or format tasks, r=16 is often enough. For harder domain adaptation or bigger datasets, higher ranks with rsLoRA can close more of the gap to full fine-tuning. "
        "Test on a held-out set.",
        "Is a higher LoRA rank worth it?")),
      ("How do I turn it on in Unsloth?",
       "Pass use_rslora=True to FastLanguageModel.get_peft_model, alongside r, lora_alpha and target_modules. "
       "In plain PEFT it's the same flag on LoraConfig. Remember to revisit lora_alpha, since the effective scale changes.",
       "How do I enable rsLoRA in Unsloth or PEFT?",
       ("Will the saved adapter still load in normal PEFT?",
        "Yes. The flag is stored in adapter_config.json, so PEFT applies the sqrt scaling when loading. "
        "Merging works the same way too, because the scaling is just part of the adapter's configuration.",
        "Does a LoRA adapter trained with rsLoRA load in standard PEFT?"))])

tree("en-multiturn-labels", "en", "lora",
     ["How should labels look when fine-tuning on multi-turn conversations?",
      "For multi-turn chat data, which tokens should count in the loss?"],
     "Render the whole conversation with the model's chat template, then set labels to -100 for system and user tokens and keep the real token ids for every assistant turn. "
     "That way every reply is trained in context, and one sample teaches several answers.",
     "How should labels be set when fine-tuning on multi-turn conversations?",
     [("Why not just train on the last assistant turn?",
       "You can, but it wastes data: earlier replies become pure context. Training on every assistant turn gives more signal per sample. "
       "Last-turn-only makes sense when earlier turns come from a different model you don't want to imitate.",
       "Why not train only on the last assistant turn in multi-turn data?",
       ("What about the end-of-turn token?",
        "Keep it in the labels. The model must learn to emit <|im_end|>, <|eot_id|> or whatever your template uses, otherwise it won't know when to stop and may start writing the user's next turn.",
        "Should the end-of-turn token be included in the training labels?")),
      ("How does the -100 actually work?",
       "PyTorch's cross-entropy loss has ignore_index=-100 by default, so those positions contribute nothing to the loss or the gradient. "
       "The tokens are still in input_ids, so the model sees them as context.",
       "How does the -100 label value work in PyTorch?",
       ("Does masking change how the loss is averaged?",
        "Yes. The mean is taken over non-masked tokens only, so samples with long answers contribute more tokens. "
        "With gradient accumulation, recent Transformers versions normalise by the total number of target tokens across micro-batches to keep this consistent.",
        "Does label masking change how the loss is averaged?")),
      ("What's the easiest way to do this in Unsloth?",
       "Build the trainer as usual, then wrap it with train_on_responses_only, giving the user and assistant header strings of your template. "
       "For Llama 3 that's \"<|start_header_id|>user<|end_header_id|>\\n\\n\" and the matching assistant header.",
       "How do I train only on assistant responses in Unsloth?",
       ("It says all labels are -100. What went wrong?",
        "Usually the header strings don't match the rendered text exactly, often a missing newline or a different template. "
        "Print one formatted sample and copy the headers from it. Also check that truncation isn't cutting off the assistant reply entirely.",
        "Unsloth train_on_responses_only makes all labels -100. What's wrong?"))])

tree("en-t4-oom", "en", "lora",
     ["I keep getting CUDA out of memory on a free Colab T4. What should I change first?",
      "QLoRA on a T4 crashes with OOM. Which settings matter most?"],
     "In order: set per_device_train_batch_size to 1 or 2 and raise gradient_accumulation_steps to keep the effective batch; lower max_seq_length; "
     "enable gradient checkpointing (use_gradient_checkpointing=\"unsloth\"); use the adamw_8bit optimiser. Activations, not LoRA weights, are usually the problem.",
     "How do I fix CUDA out of memory errors when fine-tuning on a T4?",
     [("How do I pick a max_seq_length?",
       "Tokenise your dataset and look at the length distribution. Pick a value that covers about 95 to 99 percent of samples, like 1024 or 2048. "
       "Setting 8192 just in case costs memory on long batches and rarely helps.",
       "How do I choose max_seq_length for fine-tuning?",
       ("What happens to the samples that are longer?",
        "They get truncated, so anything past the limit is dropped, possibly including the end of the answer. "
        "Either filter those samples out or split them. For chat data, dropping over-long conversations is usually cleaner.",
        "What happens to samples longer than max_seq_length?")),
      ("What does gradient checkpointing actually trade?",
       "It stores only some activations during the forward pass and recomputes the rest during backward. "
       "You save a large chunk of activation memory at the cost of extra compute, often around 20 to 30 percent slower. Unsloth's variant also offloads activations to system RAM.",
       "What does gradient checkpointing trade off?",
       ("Is packing a good idea on a T4?",
        "Packing concatenates short samples into full-length sequences, which cuts padding waste and can speed things up a lot for short chat data. "
        "Memory per step stays roughly tied to max_seq_length, so it doesn't help with OOM itself.",
        "Is sequence packing useful when fine-tuning on a T4?")),
      ("Should I use fp16 or bf16 on the T4?",
       "fp16. The T4 is a Turing GPU and has no bf16 support; bf16 arrived with Ampere cards like the A100. "
       "With Unsloth, leave dtype=None and it detects this automatically.",
       "Should I use fp16 or bf16 on a T4 GPU?",
       ("And on an H100, anything different?",
        "Use bf16, which is more numerically stable than fp16. With 80 GB you can often drop 4-bit for 8B models, use larger batches and longer sequences, and skip most memory tricks. "
        "Training is many times faster than on a T4.",
        "What changes when fine-tuning on an H100 instead of a T4?"))])

tree("en-dora", "en", "lora",
     ["What does DoRA do differently from LoRA?",
      "Is DoRA worth trying instead of plain LoRA?"],
     "DoRA (Weight-Decomposed Low-Rank Adaptation) splits each weight into a magnitude vector and a direction matrix. "
     "LoRA updates the direction while the magnitude is trained separately. "
     "This behaves more like full fine-tuning and often gives small quality gains at the same rank.",
     "What does DoRA do differently from LoRA?",
     [("What's the downside compared with plain LoRA?",
       "Training is slower and uses a bit more memory, because the weight norm has to be computed in each forward pass. "
       "The overhead is noticeable, so benchmark it. After merging, inference costs exactly the same as LoRA.",
       "What are the downsides of DoRA?",
       ("Is the gain big enough to justify the extra time?",
        "It depends on the task. The DoRA paper reports consistent gains over LoRA, and the gap is often larger at low ranks. "
        "If you're already happy with LoRA results, the extra time may not be worth it; measure on your own eval set.",
        "Is DoRA's improvement worth the slower training?")),
      ("How do I enable it?",
       "In PEFT, set use_dora=True in LoraConfig. Everything else, including r, lora_alpha and target_modules, stays the same. "
       "It works with linear layers and, in recent versions, with bitsandbytes-quantised models too.",
       "How do I enable DoRA in PEFT?",
       ("Can I combine DoRA with rsLoRA?",
        "Yes, the flags are independent: use_dora=True changes the structure of the update, and use_rslora=True changes its scaling factor. "
        "As always, change one thing at a time so you can tell which one helped.",
        "Can DoRA and rsLoRA be used together?")),
      ("Why would separating magnitude and direction help?",
       "The DoRA authors observed that full fine-tuning tends to change direction a lot with small magnitude changes, while LoRA couples the two. "
       "Giving magnitude its own parameters lets the low-rank part focus on direction, closer to full fine-tuning behaviour.",
       "Why does separating magnitude and direction in DoRA help?",
       ("Does that mean DoRA needs a different learning rate?",
        "Usually not much. Recipes typically reuse LoRA learning rates around 1e-4 to 2e-4. "
        "Some people find a slightly lower rate more stable. Do a short run and compare the loss curves.",
        "Does DoRA need a different learning rate than LoRA?"))])

tree("en-pissa-loftq", "en", "lora",
     ["What's the difference between PiSSA and LoftQ initialisation?",
      "PEFT has init_lora_weights options like \"pissa\" and \"loftq\". When would I use each?"],
     "Both replace LoRA's default zero-product start. PiSSA initialises A and B from the top singular values and vectors of each weight and freezes the residual, so training starts on the most important directions. "
     "LoftQ targets quantised models: it initialises the adapter to offset quantisation error.",
     "What's the difference between PiSSA and LoftQ initialisation?",
     [("Why does PiSSA converge faster?",
       "Standard LoRA starts with a zero update and random A, so early steps explore. "
       "PiSSA's adapter already holds the principal components of the weight, so gradients act on the directions that matter most from step one. Papers report faster convergence and better final scores.",
       "Why does PiSSA converge faster than standard LoRA?",
       ("Isn't the SVD expensive for a big model?",
        "A full SVD on every layer is slow, so PEFT offers fast randomised SVD: use init_lora_weights=\"pissa_niter_4\" or similar. "
        "That finishes in seconds to minutes with almost the same result.",
        "Is PiSSA's SVD initialisation expensive for large models?")),
      ("How does LoftQ reduce quantisation error?",
       "It alternates two steps: quantise the residual weight, then fit a low-rank approximation to what quantisation lost. "
       "After a few iterations, quantised base plus adapter is closer to the original weights than the quantised base alone.",
       "How does LoftQ reduce quantisation error?",
       ("Is LoftQ useful at 4-bit or mostly at lower bits?",
        "The biggest gains show up at 2 and 3 bits, where quantisation error is large. "
        "At 4-bit NF4 the error is already small, so the improvement is usually modest. It's cheap to try if you're doing QLoRA anyway.",
        "Is LoftQ useful with 4-bit quantisation?")),
      ("Does PiSSA work with QLoRA?",
       "Yes, and it combines nicely: since the principal components move into the adapter, the residual that gets quantised has less variance and quantises with less error. "
       "The PiSSA authors call this QPiSSA.",
       "Does PiSSA work together with QLoRA?",
       ("Anything special when I save a PiSSA adapter?",
        "Yes. Because the base weights were modified to the residual, the adapter alone doesn't match the original model. "
        "Save the initial adapter first, then pass path_initial_model_for_weight_conversion when saving, so PEFT converts it to a normal LoRA adapter.",
        "How do I save a PiSSA adapter so it works with the original model?"))])

tree("en-adalora", "en", "lora",
     ["How is AdaLoRA different from setting one fixed rank everywhere?",
      "What problem does AdaLoRA solve?"],
     "Plain LoRA gives every targeted matrix the same rank. AdaLoRA parameterises the update in an SVD-like form and, during training, prunes singular values with low importance scores. "
     "The rank budget ends up concentrated in the layers that matter most for your task.",
     "How is AdaLoRA different from standard LoRA?",
     [("Which settings do I need to give it?",
       "Mainly init_r (starting rank), target_r (average rank to end with), and the schedule: tinit for warm-up steps, tfinal for final fine-tuning steps, deltaT for how often to prune. "
       "Recent PEFT versions also require total_step.",
       "What settings does AdaLoRA need?",
       ("Why does it need total_step?",
        "The pruning schedule is defined across training: the budget shrinks between tinit and total_step minus tfinal. "
        "Without knowing the total number of steps, AdaLoRA can't plan when to reach target_r.",
        "Why does AdaLoRA need total_step?")),
      ("Is AdaLoRA popular for chat fine-tuning?",
       "Not very. It adds complexity and an extra regularisation term, and many SFT recipes get good results with a fixed rank on all linear layers. "
       "It's more interesting when you're parameter-constrained and want the best use of a small budget.",
       "Is AdaLoRA commonly used for chat fine-tuning?",
       ("So what would you pick for a first chat fine-tune?",
        "Plain LoRA or QLoRA on all linear layers, r=16, lora_alpha=16 or 32, learning rate 2e-4, one to three epochs. "
        "Get a clean baseline first, then experiment with rsLoRA, DoRA or PiSSA one at a time.",
        "What LoRA settings would you use for a first chat fine-tune?")),
      ("Can I see which layers kept more rank?",
       "Yes. AdaLoRA keeps a rank pattern, a mask per module recording which singular values survive, and PEFT stores it in the adapter config after training. "
       "Inspecting it shows where the budget went, often MLP and upper attention layers.",
       "Can I see which layers AdaLoRA gave more rank to?",
       ("Does a merged AdaLoRA model run slower?",
        "No. Once merged, the update is folded into the base weights, so inference costs the same as the original model. "
        "Unmerged, it adds a small overhead like any adapter.",
        "Does a merged AdaLoRA model run slower at inference?"))])

tree("en-merge-gguf", "en", "lora",
     ["I've finished training a LoRA. How do I get it running in llama.cpp or Ollama?",
      "What's the path from a LoRA adapter to a GGUF file?"],
     "Merge the adapter into a 16-bit copy of the base model, convert that to GGUF, then quantise. "
     "With Unsloth it's one call: model.save_pretrained_gguf(\"out\", tokenizer, quantization_method=\"q4_k_m\"). "
     "Manually, use merge_and_unload, llama.cpp's convert_hf_to_gguf.py, then llama-quantize.",
     "How do I convert a LoRA fine-tuned model to GGUF for llama.cpp or Ollama?",
     [("Why merge into 16-bit and not into the 4-bit model I trained on?",
       "Merging into quantised weights means re-quantising after the merge, which adds error on top of the original quantisation. "
       "Loading the base in 16-bit, merging and then quantising once to GGUF keeps quality higher.",
       "Why should I merge a LoRA into a 16-bit model instead of the 4-bit one?",
       ("Does the adapter trained on a 4-bit base still fit the 16-bit one?",
        "Yes, in practice. The adapter learned to correct a slightly quantised base, so there's a tiny mismatch, but it's normally negligible. "
        "Compare a few outputs before and after merging to be sure.",
        "Does a LoRA trained on a 4-bit base work on the 16-bit base model?")),
      ("Which GGUF quantisation should I choose?",
       "q4_k_m is the usual default for laptops, roughly 4.9 GB for an 8B model. q5_k_m or q6_k cost more memory for a bit more quality, and q8_0 is nearly lossless. "
       "Keep an f16 GGUF if you want to requantise later.",
       "Which GGUF quantisation type should I choose?",
       ("My q4 model answers differently from the Python version. Is that normal?",
        "Small differences are normal from quantisation and sampling settings. Large ones usually mean a template mismatch. "
        "Test with temperature 0 and the same prompt format; if f16 GGUF matches Python but q4 doesn't, try a higher quant.",
        "My quantised GGUF model answers differently from the original. Why?")),
      ("Ollama keeps generating after the answer. How do I fix it?",
       "The Modelfile template or stop tokens don't match training. Set TEMPLATE to the same chat format and add PARAMETER stop for the end-of-turn token, such as <|eot_id|> or <|im_end|>. "
       "Unsloth can write a matching Modelfile for you.",
       "My fine-tuned model in Ollama doesn't stop generating. How do I fix it?",
       ("Can I use the adapter in llama.cpp without merging?",
        "Yes. llama.cpp can convert a PEFT adapter to a GGUF LoRA with convert_lora_to_gguf.py and apply it at runtime with --lora. "
        "That's handy for swapping adapters, though merged models are simpler to distribute.",
        "Can I use a LoRA adapter in llama.cpp without merging it?"))],
     split="test")
# ---------------------------------------------------------------------------
# 日常问答 / everyday Q&A
# ---------------------------------------------------------------------------

tree("zh-rice", "zh", "general",
     ["用电饭煲煮米饭，水要放多少才合适？",
      "我煮的米饭不是太硬就是太烂，水和米的比例怎么掌握？"],
     "一般大米和水的体积比约 1:1.2 到 1:1.3。新米水分多，水可以少放一点；陈米更干，水要多一点。简单的方法是：米淘好铺平后，水面高出米面大约一个指节。",
     "用电饭煲煮米饭，水和米的比例是多少？",
     [("淘米要淘几遍？会不会把营养洗掉？",
       "一般轻轻淘两遍，水基本不浑就可以了。用力搓洗、淘很多遍确实会损失一部分水溶性维生素。如果是免淘米，简单冲一下就行。",
       "淘米要淘几遍？会把营养洗掉吗？",
       ("要不要先把米泡一会儿再煮？",
        "可以泡二三十分钟，米粒吸水更均匀，煮出来更软糯。如果电饭煲有“精煮”模式，它本身就包含浸泡阶段，就不用另外泡了。",
        "煮饭前需要先泡米吗？")),
      ("煮好以后要马上开盖吗？",
       "建议跳到保温后再焖十分钟左右再开盖，让米饭里的水分分布均匀。开盖后用饭勺从底部翻松，可以散掉多余水汽，米饭更松软。",
       "米饭煮好后要马上开盖吗？",
       ("剩饭第二天怎么热比较好吃？",
        "剩饭要尽快冷却后放冰箱。加热时洒一点水，盖上盖子用微波炉或蒸锅热透；也可以直接做成蛋炒饭，隔夜饭水分少，炒出来更粒粒分明。",
        "剩米饭第二天怎么加热比较好吃？")),
      ("煮糙米也是一样的比例吗？",
       "糙米外面有一层麸皮，吸水慢，水要多放，比例大约 1:1.5，最好提前浸泡几个小时或用糙米模式。第一次可以和白米混着煮，口感更容易接受。",
       "煮糙米饭水和米的比例是多少？",
       ("糙米真的比白米健康吗？",
        "糙米保留了麸皮和胚芽，膳食纤维、B 族维生素和矿物质更多，饱腹感也更强。不过肠胃较弱的人可以少量搭配，慢慢适应。",
        "糙米比白米更健康吗？"))])

tree("zh-vocab", "zh", "general",
     ["背英语单词总是背了就忘，有什么好方法吗？",
      "单词背了好几遍还是记不住，我的方法是不是有问题？"],
     "遗忘是正常的，关键是在快忘的时候复习。可以用间隔重复：学完后第 1 天、第 3 天、第 7 天、第 14 天各复习一次。同时把单词放进句子里记，比单独背拼写更牢。",
     "英语单词背了就忘，有什么好方法？",
     [("间隔重复要自己记日期吗？好麻烦。",
       "可以用 Anki 这类记忆卡片软件，它会根据你每次回答的难易程度自动安排复习时间。你只需要每天把当天到期的卡片刷完就好。",
       "间隔重复怎么安排复习时间？有没有工具？",
       ("每天刷多少张卡片比较合适？",
        "新卡每天 10 到 20 张比较稳妥，复习卡会随之慢慢增加，一般控制在 20 分钟内。贪多一次加很多新词，几天后复习量会压得人想放弃。",
        "用记忆卡片背单词，每天学多少张合适？")),
      ("放进句子里记，具体怎么做？",
       "遇到新词时，抄下你在课文或文章中看到的原句，再自己造一个和生活相关的句子。比如学 reluctant，可以写“I was reluctant to get up this morning.”有情境的记忆更容易被提取。",
       "怎么通过句子来记英语单词？",
       ("自己造的句子不知道对不对怎么办？",
        "可以查词典里的例句对照用法，或者发给老师、同学看看。也可以把句子拿去问 AI 助手检查语法。错了也没关系，改正的过程本身就能加深印象。",
        "自己用新单词造句，不知道对不对怎么办？")),
      ("我背的单词考试能认出来，但写作文时想不起来。",
       "这是“认识”和“会用”的区别。多做主动回忆：看中文想英文，或者每周用新学的词写一小段日记。被动输入多了，还需要主动输出才能用得出来。",
       "单词能认出来但写作时用不出来，怎么办？",
       ("每周写日记写什么内容好？",
        "写最近发生的小事就行，比如考试、社团、吃了什么，五六句就够。每次刻意用上三个新词。重点是坚持，而不是写得多漂亮。",
        "用英语写周记，写什么内容比较好？"))])

tree("zh-running", "zh", "general",
     ["我想开始跑步锻炼，但跑两分钟就喘不上气，怎么办？",
      "完全没有运动基础，想练跑步，应该怎么开始？"],
     "刚开始跑容易喘，通常是速度太快了。可以用跑走结合：跑 1 分钟、走 2 分钟，重复 6~8 组。跑的时候速度以还能说完整句子为准。每周练三次，几周后再逐渐延长跑的时间。",
     "零基础想开始跑步，应该怎么练？",
     [("跑完膝盖有点酸，还能继续跑吗？",
       "轻微的肌肉酸痛一般休息一两天就好。如果是关节里面疼、肿，或者越跑越痛，就先停下来，必要时去看医生。穿一双合脚的跑鞋，在塑胶跑道上跑，对膝盖更友好。",
       "跑步后膝盖酸痛还能继续跑吗？",
       ("跑前跑后需要做哪些拉伸？",
        "跑前做动态热身，比如高抬腿、弓步走、摆腿，五分钟左右；跑后再做静态拉伸，拉大腿前后侧和小腿，每个动作保持二三十秒。",
        "跑步前后应该怎么热身和拉伸？")),
      ("早上跑好还是晚上跑好？",
       "没有绝对的好坏，能坚持的时间就是最好的时间。早上跑空气清新、一天精神好，但要先热身；晚上身体更灵活，但最好在睡前两三小时结束，以免影响睡眠。",
       "跑步是早上跑好还是晚上跑好？",
       ("早上空腹跑步可以吗？",
        "短时间、低强度的慢跑一般没问题。如果容易头晕或低血糖，可以先吃半根香蕉或喝点牛奶。跑完记得补水、吃早餐。",
        "早上可以空腹跑步吗？")),
      ("要多久才能连续跑 5 公里？",
       "因人而异。按跑走结合、每周三次的节奏，很多初学者八到十周左右能连续跑完 5 公里。每周增加的跑量不要超过 10%，循序渐进更不容易受伤。",
       "零基础练跑步，多久能连续跑 5 公里？",
       ("坚持不下去的时候怎么办？",
        "可以找个跑步搭子一起跑，或者用 App 记录每次的进步。给自己设一个小目标，比如报名一个 5 公里的趣味跑。实在累的时候，走一走也算在坚持。",
        "练跑步坚持不下去怎么办？"))],
     split="test")

tree("en-houseplant", "en", "general",
     ["How often should I water a pothos in my dorm room?",
      "My pothos has yellow leaves. Am I watering it wrong?"],
     "Pothos like the top few centimetres of soil to dry out before watering, which is often about once a week, less in winter. "
     "Yellow leaves usually mean too much water. Stick a finger in the soil: if it's still damp, wait.",
     "How often should I water a pothos?",
     [("The pot doesn't have a drainage hole. Is that a problem?",
       "Yes, it's a common cause of root rot, because extra water sits at the bottom. "
       "Easiest fix: keep the plant in a cheap plastic pot with holes and put that inside the decorative one. Empty any water that collects after watering.",
       "Is it a problem if a plant pot has no drainage hole?",
       ("How do I know if the roots are already rotting?",
        "Slide the plant out and look. Healthy roots are firm and white or light tan; rotten ones are brown, mushy and may smell bad. "
        "Trim the rotten parts with clean scissors and repot in fresh, dry-ish soil.",
        "How can I tell if my plant has root rot?")),
      ("My room only has a small north-facing window. Will it survive?",
       "Pothos are one of the best low-light plants, so it should be fine, just growing slower. "
       "Keep it within a metre or two of the window and water less often, since soil dries slowly in low light.",
       "Can a pothos survive in a room with little light?",
       ("The vines are getting long and bare. Can I fix that?",
        "Yes, trim the long vines just below a leaf node. Put the cuttings in water; they'll root in a few weeks and you can plant them back in the same pot to make it fuller.",
        "How do I fix long, leggy pothos vines?")),
      ("Should I fertilise it, and how often?",
       "A little helps in spring and summer: a balanced liquid houseplant fertiliser at half strength about once a month. "
       "Skip it in winter when growth slows. Too much fertiliser can burn the roots.",
       "Should I fertilise a pothos?",
       ("Is pothos safe around pets?",
        "No, pothos is toxic to cats and dogs if chewed, causing mouth irritation and drooling. "
        "Keep it on a high shelf or hanging, or choose a pet-safe plant like a spider plant.",
        "Is pothos safe for cats and dogs?"))])

tree("en-budget", "en", "general",
     ["I'm a student and my money always runs out before the end of the month. Any tips?",
      "How do I make a simple budget as a university student?"],
     "Start by tracking every expense for two weeks; most people are surprised by small things like snacks and delivery fees. "
     "Then split your monthly money into fixed costs, food, and fun, and move a small amount to savings as soon as money arrives.",
     "How can a student make a simple monthly budget?",
     [("What's the best way to track spending without it being a chore?",
       "Use your banking app's spending categories if it has them, or a simple note on your phone where you log each purchase at the time. "
       "Review it once a week for five minutes rather than daily.",
       "What's an easy way to track spending?",
       ("Food delivery is clearly my biggest leak. How do I cut it?",
        "Don't ban it completely, set a limit, like one delivery a week. Batch-cook two simple meals on Sunday so there's always something ready when you're tired. "
        "Deleting the app from your home screen adds useful friction.",
        "How can I spend less on food delivery?")),
      ("How much should I actually save as a student?",
       "Any regular amount builds the habit, even 5 percent. A first goal could be a small emergency fund, enough for a surprise bill or a train ticket home. "
       "Once that's in place, save toward specific things.",
       "How much should a student save each month?",
       ("Where should I keep the emergency money?",
        "In a separate easy-access savings account, not your everyday account, so you don't spend it by accident. "
        "It should be available within a day or two without penalties.",
        "Where should I keep an emergency fund?")),
      ("Is it okay to use a credit card to get through the month?",
       "Only if you can pay the full balance every month. Carrying a balance means paying high interest, and it easily snowballs. "
       "If you're regularly short, look at the budget first, and ask your university about hardship funds.",
       "Is it okay for students to rely on a credit card to get through the month?",
       ("What are hardship funds, and who can get them?",
        "Many universities have grants or short-term loans for students in financial difficulty, often not needing to be repaid. "
        "Contact the student support or money advice team; they can also help you build a budget.",
        "What are university hardship funds?"))])

tree("en-eggs", "en", "general",
     ["How long should I boil an egg if I want a soft, jammy yolk?",
      "What's the trick to getting soft-boiled eggs right every time?"],
     "For a large egg straight from the fridge, lower it into already boiling water and cook for about 6 and a half to 7 minutes. "
     "Then move it straight into cold water for a few minutes to stop the cooking. Adjust by 30 seconds next time to suit your taste.",
     "How long do I boil an egg for a soft, jammy yolk?",
     [("Why put it into boiling water instead of starting cold?",
       "Starting in boiling water makes the timing consistent, because you know exactly when cooking begins. "
       "It also tends to make eggs easier to peel. A cold start works too, but the timing depends on your pan and hob.",
       "Why should eggs go into boiling water rather than cold water?",
       ("They keep cracking when I drop them in.",
        "Lower them gently with a spoon, and let them sit out for a few minutes first so they're less cold. "
        "A splash of vinegar in the water helps the white set quickly if one does crack.",
        "How do I stop eggs cracking when boiling them?")),
      ("How do I peel them without tearing the egg?",
       "Cool them in cold water first, then tap the wide end, where the air pocket is, and peel under running water. "
       "Very fresh eggs are harder to peel, so eggs that are a week or so old work better.",
       "How do I peel soft-boiled eggs cleanly?",
       ("Can I make them ahead for lunches?",
        "Yes. Unpeeled, they keep in the fridge for up to about a week. "
        "Soft-boiled ones are best within a few days. A popular trick is marinating peeled eggs in soy sauce, mirin and water overnight.",
        "Can I boil eggs ahead of time for lunches?")),
      ("And for a fully hard-boiled egg?",
       "About 10 to 12 minutes in boiling water, then an ice bath. Going much longer gives a rubbery white and a grey-green ring around the yolk. "
       "That ring is harmless, just overcooked.",
       "How long should I boil a hard-boiled egg?",
       ("What causes that green ring exactly?",
        "It's iron sulfide: when eggs are overcooked, sulfur from the white reacts with iron in the yolk. "
        "Shorter cooking and cooling the eggs quickly right after prevent it.",
        "What causes the green ring around a hard-boiled egg yolk?"))],
     split="test")

# ---------------------------------------------------------------------------
# System prompts (about a third of the chat conversations start with one)
# ---------------------------------------------------------------------------

SYSTEM_PROMPTS = {
    ("zh", "counselling"): [
        "你是一位耐心的心理咨询助手。",
        "你是面向学生的心理支持助手，语气温和，给出具体可行的建议。",
        "你是一位温暖的倾听者，帮助青少年梳理情绪；遇到严重情况时建议寻求专业帮助。",
    ],
    ("zh", "lora"): [
        "你是一位熟悉 LoRA 微调的技术助手，回答简洁准确。",
        "你是大模型微调课程的助教，用通俗的中文解释概念。",
        "你是一名擅长单卡微调的机器学习工程师。",
    ],
    ("zh", "general"): [
        "你是一个乐于助人的生活助手。",
        "你是一个回答简洁实用的中文助手。",
    ],
    ("en", "counselling"): [
        "You are a supportive assistant for students. Be kind, practical and non-judgemental.",
        "You are a warm listener who helps young people with stress and relationships. Suggest professional help for anything serious.",
        "You are a patient counselling assistant.",
    ],
    ("en", "lora"): [
        "You are a concise assistant who explains LoRA fine-tuning.",
        "You are an ML engineer who helps people fine-tune LLMs on a single GPU.",
        "You answer questions about PEFT, TRL and Unsloth accurately and briefly.",
    ],
    ("en", "general"): [
        "You are a helpful, friendly assistant.",
        "You are a practical assistant who gives short, clear answers.",
    ],
}

# Hand-written Alpaca-style records that use the "input" field.
INSTRUCTIONS_WITH_INPUT = [
    {"instruction": "根据下面的训练配置，指出可能导致显存不足的设置，并给出修改建议。",
     "input": "GPU：T4 16GB；模型：Llama-3-8B，bf16 加载，未量化；max_seq_length=8192；per_device_train_batch_size=8；未开启梯度检查点。",
     "output": "主要有三个问题：1. 8B 模型 bf16 加载约需 16GB，T4 放不下，应改为 4-bit 加载（QLoRA）；2. T4 不支持 bf16，要改用 fp16；"
               "3. 序列 8192、batch 8 且不开梯度检查点，激活值太大。建议 max_seq_length=2048、batch=2 配合梯度累积，并开启梯度检查点。"},
    {"instruction": "Calculate the effective batch size for this configuration and explain what it means.",
     "input": "per_device_train_batch_size=4, gradient_accumulation_steps=8, number of GPUs=1",
     "output": "The effective batch size is 4 x 8 x 1 = 32. Gradients from 32 samples are accumulated before each optimiser step, "
               "so the weights update once every 8 forward/backward passes."},
    {"instruction": "Explain what this PEFT configuration does in two or three sentences.",
     "input": "LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=\"all-linear\", task_type=\"CAUSAL_LM\")",
     "output": "It adds rank-16 LoRA adapters to every linear layer of a causal language model except the output head. "
               "Updates are scaled by lora_alpha / r = 2, and 5% dropout is applied to the adapter inputs as light regularisation."},
    {"instruction": "请用温和的语气，回应下面这位同学的倾诉。",
     "input": "最近月考没考好，爸妈什么都没说，但我自己特别失落，总觉得辜负了他们。",
     "output": "你会这么失落，说明你很在乎家人，也很在乎自己的努力。一次月考只是一次反馈，不代表你这个人。"
               "可以先看看哪些题是知识没掌握、哪些是粗心，再定一个小目标。也可以主动和爸妈聊聊，他们的沉默也许是在给你空间。"},
    {"instruction": "Rewrite this message to a friend so it sounds less accusing.",
     "input": "You always ignore me when your new friends are around. You clearly don't care anymore.",
     "output": "Hey, I've felt a bit left out lately when we're with your new friends, and I miss hanging out with you. "
               "Could we plan something soon, just the two of us?"},
    {"instruction": "判断下面的 labels 设置是否合理，并说明原因。",
     "input": "多轮对话样本：system 和所有 user 轮的 labels 设为 -100；只有最后一轮 assistant 保留 token id，前面几轮 assistant 也设为 -100。",
     "output": "可以训练，但会浪费数据：前几轮 assistant 回复只作为上下文，不参与学习。更常见的做法是保留每一轮 assistant 回复（包括结束符）的 labels，"
               "只遮掉 system 和 user。如果前几轮回复来自你不想模仿的模型，只训最后一轮才更合适。"},
    {"instruction": "Recommend 16-bit LoRA or QLoRA for this setup, with a short reason.",
     "input": "Model: Qwen2.5-7B-Instruct. GPU: one H100 80GB. Dataset: 20k chat samples, up to 2048 tokens each.",
     "output": "Use 16-bit LoRA in bf16. A 7B model needs about 15 GB for weights, leaving plenty of room on 80 GB for activations and larger batches. "
               "It trains faster than 4-bit and avoids quantisation error; QLoRA is only needed if memory is tight."},
    {"instruction": "针对下面的情况，给这位学生写一条简短、具体的建议。",
     "input": "高二学生，每晚刷手机到一点多，白天上课一直犯困，自己也想改但做不到。",
     "output": "想改却做不到很正常，手机本来就让人停不下来。可以试试：睡前一小时把手机放到客厅充电，用闹钟代替手机叫醒；"
               "每天固定时间起床，早上晒晒太阳。先坚持一周，看看白天精神有没有变好。"},
]


# ---------------------------------------------------------------------------
# Composition
# ---------------------------------------------------------------------------

def paths(t):
    """All conversation paths through a tree: [F_i] and [F_i, D_i]."""
    out = []
    for i, fu in enumerate(t["follow_ups"]):
        out.append((i, False))
        out.append((i, True))
    return out


def exchanges(t, opening_idx, path):
    """Return [(user, assistant), ...] for one path through a tree."""
    i, deep = path
    q, a, _sq, (dq, da, _dsq) = t["follow_ups"][i]
    ex = [(t["opens"][opening_idx], t["answer"]), (q, a)]
    if deep:
        ex.append((dq, da))
    return ex


def standalone_items(t):
    """Single-turn (question, answer) pairs that make sense out of context."""
    items = [(t["opens"][0] if t["sq"] == "=" else t["sq"], t["answer"])]
    for q, a, sq, (dq, da, dsq) in t["follow_ups"]:
        if sq is not None:
            items.append((q if sq == "=" else sq, a))
        if dsq is not None:
            items.append((dq if dsq == "=" else dsq, da))
    return items


def to_messages(ex, system=None):
    msgs = [{"role": "system", "content": system}] if system else []
    for u, a in ex:
        msgs.append({"role": "user", "content": u})
        msgs.append({"role": "assistant", "content": a})
    return {"messages": msgs}


def to_sharegpt(ex, system=None):
    conv = [{"from": "system", "value": system}] if system else []
    for u, a in ex:
        conv.append({"from": "human", "value": u})
        conv.append({"from": "gpt", "value": a})
    return {"conversations": conv}


def to_guanaco(ex):
    return {"text": "".join(f"### Human: {u}### Assistant: {a}" for u, a in ex)}


def pick_system(rng, t, p=1 / 3):
    if rng.random() < p:
        return rng.choice(SYSTEM_PROMPTS[(t["lang"], t["topic"])])
    return None


def balanced(rng, pool, n, key=lambda x: x["lang"]):
    """Take n items from pool, half per language, order shuffled."""
    by = {}
    for x in pool:
        by.setdefault(key(x), []).append(x)
    out = []
    langs = sorted(by)
    for j, lang in enumerate(langs):
        k = n // len(langs) + (1 if j < n % len(langs) else 0)
        items = by[lang][:]
        rng.shuffle(items)
        if len(items) < k:
            raise SystemExit(f"not enough {lang} items: need {k}, have {len(items)}")
        out.extend(items[:k])
    rng.shuffle(out)
    return out


def chat_combos(trees):
    """Every (tree, opening phrasing, path) combination, phrasing 0 first."""
    first, second = [], []
    for t in trees:
        for j, p in enumerate(paths(t)):
            # alternate which phrasing a path gets first, so both are used
            k = j % 2
            first.append(dict(tree=t, lang=t["lang"], open=k, path=p))
            second.append(dict(tree=t, lang=t["lang"], open=1 - k, path=p))
    return first, second


def build_chat(rng, trees, n):
    first, second = chat_combos(trees)
    if n <= len(first):
        chosen = balanced(rng, first, n)
        leftover = [c for c in first if c not in chosen] + second
    else:
        extra = balanced(rng, second, n - len(first))
        chosen = first + extra
        leftover = [c for c in second if c not in extra]
        rng.shuffle(chosen)
    return chosen, leftover


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    rng = random.Random(SEED)
    train_trees = [t for t in TREES if t["split"] == "train"]
    test_trees = [t for t in TREES if t["split"] == "test"]

    # 1. chat_multiturn (OpenAI messages)
    chat_train, spare = build_chat(rng, train_trees, 300)
    chat_test, _ = build_chat(rng, test_trees, 40)
    for name, combos in (("train", chat_train), ("test", chat_test)):
        rows = [to_messages(exchanges(c["tree"], c["open"], c["path"]), pick_system(rng, c["tree"]))
                for c in combos]
        write_jsonl(HERE / "chat_multiturn" / f"{name}.jsonl", rows)

    # 2. samples/sharegpt.jsonl: 20 combinations not used in chat_multiturn/train
    share = balanced(rng, spare, 20)
    write_jsonl(HERE / "samples" / "sharegpt.jsonl",
                [to_sharegpt(exchanges(c["tree"], c["open"], c["path"]), pick_system(rng, c["tree"], 0.4))
                 for c in share])

    # single-turn pools
    def items_of(trees):
        return [dict(lang=t["lang"], q=q, a=a) for t in trees for q, a in standalone_items(t)]

    train_items, test_items = items_of(train_trees), items_of(test_trees)

    # 3. samples/instructions.json: 8 with input + 12 plain
    plain = balanced(rng, train_items, 12)
    records = [{"instruction": x["q"], "input": "", "output": x["a"]} for x in plain]
    records += INSTRUCTIONS_WITH_INPUT
    rng.shuffle(records)
    (HERE / "samples").mkdir(parents=True, exist_ok=True)
    with open(HERE / "samples" / "instructions.json", "w", encoding="utf-8") as f:
        json.dump(records, f, ensure_ascii=False, indent=2)
        f.write("\n")

    # 4. instructions/{train,test}.jsonl
    write_jsonl(HERE / "instructions" / "train.jsonl",
                [{"instruction": x["q"], "response": x["a"]} for x in balanced(rng, train_items, 200)])
    write_jsonl(HERE / "instructions" / "test.jsonl",
                [{"instruction": x["q"], "response": x["a"]} for x in balanced(rng, test_items, 30)])

    # 5. guanaco_style: 60% one exchange, 40% two exchanges
    def guanaco(trees, items, n):
        n_two = n * 2 // 5
        two = [dict(lang=t["lang"], ex=[(t["opens"][k], t["answer"]), t["follow_ups"][i][:2]])
               for t in trees for k in (0, 1) for i in range(3) if (i + k) % 2 == 0]
        one = [dict(lang=x["lang"], ex=[(x["q"], x["a"])]) for x in items]
        rows = balanced(rng, two, n_two) + balanced(rng, one, n - n_two)
        rng.shuffle(rows)
        return [to_guanaco(r["ex"]) for r in rows]

    write_jsonl(HERE / "guanaco_style" / "train.jsonl", guanaco(train_trees, train_items, 120))
    write_jsonl(HERE / "guanaco_style" / "test.jsonl", guanaco(test_trees, test_items, 20))

    print(f"trees: {len(train_trees)} train, {len(test_trees)} test; wrote files under {HERE}")


if __name__ == "__main__":
    main()
