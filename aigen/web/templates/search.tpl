%# The search and filters of the gallery page (aigen.store.search): a GET form, so the search is in the URL.
<form class="search" method="get" action="/" role="search">
  <label for="search-q" class="visually-hidden">Search prompts</label>
  <input id="search-q" type="search" name="q" value="{{filters.q}}" maxlength="200" placeholder="Search prompts">
  <label for="search-status" class="visually-hidden">Status</label>
  <select id="search-status" name="status">
    <option value="">Any status</option>
    % for s in ('Completed', 'Processing', 'Failed'):
    <option value="{{s}}" {{'selected' if filters.status == s else ''}}>{{s}}</option>
    % end
  </select>
  <label for="search-provider" class="visually-hidden">Provider</label>
  <select id="search-provider" name="provider">
    <option value="">Any provider</option>
    % for p in providers:
    <option value="{{p}}" {{'selected' if filters.provider == p else ''}}>{{p}}</option>
    % end
  </select>
  <label for="search-sort" class="visually-hidden">Order</label>
  <select id="search-sort" name="sort">
    <option value="newest">Newest first</option>
    <option value="oldest" {{'selected' if filters.order == 'oldest' else ''}}>Oldest first</option>
  </select>
  <button type="submit" class="link-button">Search</button>
  % if filters.active:
  <a href="/">Clear</a>
  % end
</form>
