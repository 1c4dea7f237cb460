"""Prompt templates: the packaged paper templates, rendering, and errors on bad templates."""

import pytest
from palr.plugins.llama_lora.prompts import PromptError, build_prompt, check_templates, default_templates

from palr_core import ItemCatalog


@pytest.fixture
def catalog():
    return ItemCatalog(ids=["B01", "B02", "B03"], titles=["Gigi", "Alien", "Heat"], domain="movies")


def test_default_templates_cover_both_domains_and_tasks():
    templates = default_templates()
    assert {d: sorted(t) for d, t in templates.items()} == {
        "movies": ["choice", "recommend", "retrieval"], "products": ["choice", "recommend", "retrieval"]}
    check_templates(templates)


def test_choice_prompt_labels_each_candidate(catalog):
    text = build_prompt(default_templates(), "choice", catalog, [0], [1, 2], n=1, labels="AB")
    assert 'User watched movies "Gigi". The candidates are (A) "Alien", (B) "Heat". Answer with' in text
    assert text.endswith("Output: ")
    with pytest.raises(PromptError, match="a label for every candidate"):
        build_prompt(default_templates(), "choice", catalog, [0], [1, 2], labels="A")


def test_retrieval_prompt_lists_history_candidates_and_profile(catalog):
    text = build_prompt(default_templates(), "retrieval", catalog, [0], [1, 2], "Likes sci-fi.", n=2)
    assert text.startswith("Recommend 2 other movies based on user's watching history from the candidate list.")
    assert 'User watched movies "Gigi". The candidates are "Alien", "Heat". Output: ' in text
    assert "Likes sci-fi. Input:" in text


def test_recommend_prompt_without_profile_has_no_gap(catalog):
    text = build_prompt(default_templates(), "recommend", catalog, [0, 1], profile="")
    assert "history. Input: User watched movies \"Gigi\", \"Alien\". Output: " in text


def test_products_render_asin_and_title():
    catalog = ItemCatalog(ids=["B000142FVW"], titles=["Opi Nail Lacquer"], domain="products", show_id=True)
    text = build_prompt(default_templates(), "recommend", catalog, [0])
    assert 'User has purchased the following products "B000142FVW (Opi Nail Lacquer)"' in text


def test_unknown_placeholder_is_named():
    with pytest.raises(PromptError, match=r"ranker.templates.movies.recommend: unknown placeholders \['hist'\]"):
        check_templates({"movies": {"recommend": "{hist}"}}, "ranker.templates")


def test_retrieval_template_must_show_candidates():
    with pytest.raises(PromptError, match="must contain"):
        check_templates({"movies": {"retrieval": "{history} Output:"}})


def test_missing_domain_is_reported(catalog):
    with pytest.raises(PromptError, match="no prompt template for domain 'movies'"):
        build_prompt({"products": default_templates()["products"]}, "recommend", catalog, [0])
